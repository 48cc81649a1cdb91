"""Fused BigDataViewer export goes straight into HDF5 through the block-writer interface."""

import h5py
import numpy as np
import pytest

from conftest import CountingSource
from tilefuse import ExecOptions, FusionOptions, OutputOptions, Tile, Tileset
from tilefuse.errors import OutputExistsError
from tilefuse.fuse import FusionPlan, fuse_tiles
from tilefuse.geometry import affine_from_offset
from tilefuse.io.bdv import BdvView, write_bdv
from tilefuse.synthetic import cut_tiles, make_volume
from tilefuse.writers import BdvWriter


def _mosaic(shape=(8, 290, 310), grid=(2, 3), seed=4):
    vol, _ = make_volume(shape, seed=seed)
    m = cut_tiles(vol, grid, overlap=0.25)
    vs = (0.5, 0.25, 0.25)
    return vol, m, Tileset.from_arrays(m.tiles, m.offsets_px * vs, voxel_size=vs)


def _levels(h5, setup=0):
    with h5py.File(h5, "r") as f:
        n = len(f[f"s{setup:02d}/resolutions"])
        return [f[f"t00000/s{setup:02d}/{k}/cells"][...].view(np.uint16) for k in range(n)]


def test_fused_bdv_equals_the_fused_volume_with_its_pyramid(tmp_path, monkeypatch):
    vol, _, ts = _mosaic()
    # no scratch OME-Zarr store: creating one fails the test
    from tilefuse.io import ome_zarr

    def no_store(*a, **k):
        raise AssertionError("fused BDV export must not create an OME-Zarr store")

    monkeypatch.setattr(ome_zarr.MultiScaleGroup, "create", no_store)
    h5, xml = ts.to_bdv(
        tmp_path / "f.h5", fused=True, blend="linear", workers=2, chunks=(8, 64, 64)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5", "f.xml"]
    levels = _levels(h5)
    np.testing.assert_array_equal(levels[0], vol)  # integer offsets: exact
    # the pyramid is the one write_bdv builds from the same volume
    ref, _ = write_bdv(
        tmp_path / "ref" / "r.h5", [BdvView(vol, (0.5, 0.25, 0.25))], chunks=(8, 64, 64)
    )
    want = _levels(ref)
    assert len(levels) == len(want) > 1
    for got, exp in zip(levels, want, strict=True):
        np.testing.assert_array_equal(got, exp)
    # read back through the XML: one setup at the fused grid's position
    back = Tileset.open(xml)
    assert len(back) == 1
    np.testing.assert_array_equal(back[0].read(), vol)
    np.testing.assert_allclose(back[0].voxel_size, (0.5, 0.25, 0.25))


def test_fused_bdv_options_and_channels(tmp_path):
    vol, _ = make_volume((6, 90, 100), seed=2)
    two = np.stack([vol, vol // 3 + 5])
    m = cut_tiles(two, (2, 2), overlap=0.3)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px, channels=("dapi", "gfp"))
    h5, _ = ts.to_bdv(
        tmp_path / "c.h5",
        fused=True,
        output_options=OutputOptions(levels=1, compression="none"),
        blend="overwrite",
        workers=1,
    )
    with h5py.File(h5, "r") as f:
        assert sorted(k for k in f if k.startswith("s")) == ["s00", "s01"]
        for c in range(2):
            ds = f[f"t00000/s{c:02d}/0/cells"]
            assert ds.compression is None and len(f[f"s{c:02d}/resolutions"]) == 1
            np.testing.assert_array_equal(ds[...].view(np.uint16), two[c])
    xml = (tmp_path / "c.xml").read_text()
    assert "<name>dapi</name>" in xml and "<name>gfp</name>" in xml


def test_fused_bdv_failure_leaves_nothing_and_existing_output_is_refused(tmp_path):
    _, m, _ = _mosaic(grid=(2, 2))
    sources = [CountingSource(t) for t in m.tiles]
    sources[-1].fail_after = 2
    tiles = [
        Tile(s, affine_from_offset((1, 1, 1), o), name=f"t{k}")
        for k, (s, o) in enumerate(zip(sources, m.offsets_px, strict=True))
    ]
    plan = FusionPlan.from_options(tiles, FusionOptions(), voxel_size=(1, 1, 1))
    writer = BdvWriter(tmp_path / "x.h5", OutputOptions(chunks=(4, 32, 32)), block=(8, 64, 64))
    with pytest.raises(RuntimeError, match="simulated crash"):  # after some blocks were written
        fuse_tiles(plan, writer, ExecOptions(workers=1))
    assert sources[-1].regions and len(writer.grid.blocks()) > 4
    assert list(tmp_path.iterdir()) == []  # no h5, no .partial, no xml, no scratch store
    ts = Tileset.from_arrays(m.tiles, m.offsets_px)
    ts.to_bdv(tmp_path / "x.h5", fused=True, workers=1)
    with pytest.raises(OutputExistsError):
        ts.to_bdv(tmp_path / "x.h5", fused=True, workers=1)
    with pytest.raises(ValueError, match="only with fused"):
        ts.to_bdv(tmp_path / "y.h5", blend="max")
