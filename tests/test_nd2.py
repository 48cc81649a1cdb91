"""ND2 tiles: real NIS-Elements files, stage positions, timepoints, position tables."""

import nd2
import numpy as np
import pytest
import yaml

from tilefuse import Tileset
from tilefuse.errors import UnsupportedFormatError
from tilefuse.io.nd2 import DEFAULT_STAGE_SIGNS, Nd2Source, nd2_positions


@pytest.fixture(scope="module")
def nd2_dir(shared_data):
    return shared_data / "nd2"


@pytest.mark.parametrize(
    "name", ["example-multichannel.nd2", "example-timelapse.nd2", "example-zstack.nd2"]
)
def test_metadata_matches_known_values(nd2_dir, name):
    known = yaml.safe_load((nd2_dir / "known-metadata.yml").read_text())[name]
    first = next(iter(known.values()))["resolution"]
    src = Nd2Source(nd2_dir / name)
    assert src.shape == (len(known), first["z_size_px"], first["y_size_px"], first["x_size_px"])
    assert src.dtype == np.uint16
    np.testing.assert_allclose(
        src.voxel_size_zyx, [first["z_step_um"], first["xy_step_um"], first["xy_step_um"]]
    )
    assert len(src.channel_names) == len(known)


def test_pixels_channels_and_timepoints(nd2_dir):
    with nd2.ND2File(nd2_dir / "cluster.nd2") as f:  # T3 Z10 C2 Y31 X38
        full = f.asarray()
    for t in (0, 2):
        src = Nd2Source(nd2_dir / "cluster.nd2", timepoint=t)
        assert src.shape == (2, 10, 31, 38)
        got = src.read((slice(2, 5), slice(3, 20), slice(0, 38)))
        np.testing.assert_array_equal(got, full[t, 2:5, :, 3:20, :].transpose(1, 0, 2, 3))
    ts = Tileset.from_nd2(nd2_dir / "cluster.nd2", timepoint=1)
    np.testing.assert_allclose(ts.voxel_size, [0.5, 0.16780898323268245, 0.16780898323268245])
    np.testing.assert_array_equal(ts[0].read(), full[1].transpose(1, 0, 2, 3))
    with pytest.raises(IndexError, match="T index 3"):
        Nd2Source(nd2_dir / "cluster.nd2", timepoint=3)


def test_reads_only_the_frames_a_region_needs(nd2_dir):
    src = Nd2Source(nd2_dir / "example-zstack.nd2")
    src.read((slice(0, 1), slice(0, 1), slice(0, 1)))  # opens the file
    calls = []
    handle = src._handle()  # the open ND2File
    real = handle.read_frame
    handle.read_frame = lambda i: calls.append(i) or real(i)
    src.read((slice(4, 6), slice(0, 128), slice(0, 128)))
    assert calls == [4, 5]
    src.close()


def test_files_as_tiles_positioned_by_stage(nd2_dir):
    files = [nd2_dir / "example-multichannel.nd2", nd2_dir / "example-pbmc.nd2"]
    ts = Tileset.from_nd2(files)
    assert len(ts) == 2 and ts.n_channels == 4
    for tile, f in zip(ts, files, strict=True):
        with nd2.ND2File(f) as h:
            p = h.frame_metadata(0).channels[0].position.stagePositionUm
        np.testing.assert_allclose(tile.offset, np.array([p.z, p.y, p.x]) * DEFAULT_STAGE_SIGNS)
    flipped = Tileset.from_nd2(files, stage_signs=(1, 1, 1))
    np.testing.assert_allclose(flipped.offsets[:, 2], -ts.offsets[:, 2])
    assert [p.index for p in nd2_positions(files[0])] == [0]


def test_position_table_builds_a_mosaic(nd2_dir):
    """The multi-position code path, driven by a table of several positions."""
    f = nd2_dir / "example-zstack.nd2"  # 11 x 128 x 128, xy 0.3234 um
    step = 100 * 0.323390342594048  # 100 px apart: 28 px overlap
    table = [(0.0, 0.0, 0.0), (0.0, 0.0, -step), (0.0, step, 0.0), (0.0, step, -step)]
    ts = Tileset.from_nd2([f, f, f, f], positions_um=table)
    np.testing.assert_allclose(ts.offsets[:, 2], [0, step, 0, step])  # x flipped by default
    assert len(ts.overlaps()) == 6  # 2x2 grid: 4 edges + 2 diagonals
    fused = ts.fuse(blend="overwrite")
    assert fused.shape == (11, 228, 228)
    with pytest.raises(ValueError, match=r"positions_um must be \(4, 3\)"):
        Tileset.from_nd2([f, f, f, f], positions_um=table[:3])


def test_corrupt_nd2(tmp_path):
    bad = tmp_path / "broken.nd2"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(UnsupportedFormatError, match="broken.nd2"):
        Nd2Source(bad)


def test_channel_selection(nd2_dir):
    ts = Tileset.from_nd2(nd2_dir / "example-multichannel.nd2")
    names = list(ts[0].channels)
    sub = ts.select_channels([names[2], 0])
    assert sub.n_channels == 2 and sub[0].channels == (names[2], names[0])
    full = ts[0].read()
    np.testing.assert_array_equal(sub[0].read(), full[[2, 0]])
    with pytest.raises(KeyError, match="no channel 'GFP'"):
        ts.select_channels(["GFP"])
