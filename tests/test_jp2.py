"""JPEG 2000 tiles: real files, lossless round trip, exm offsets, fusion equal to TIFF."""

import imagecodecs
import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.errors import TileConfigError, UnsupportedFormatError
from tilefuse.io.jp2 import Jp2Source, read_exm_offsets, write_jp2
from tilefuse.io.tiff import write_tiff
from tilefuse.synthetic import cut_tiles, make_volume


def test_real_codestream_and_rgb_jp2(shared_data):
    j2k = Jp2Source(shared_data / "jp2" / "uint16.j2k")
    assert j2k.shape == (1, 1, 128, 128) and j2k.dtype == np.uint16
    direct = imagecodecs.jpeg2k_decode((shared_data / "jp2" / "uint16.j2k").read_bytes())
    np.testing.assert_array_equal(
        j2k.read((slice(0, 1), slice(0, 128), slice(0, 128)))[0, 0], direct
    )
    rgb = Jp2Source(shared_data / "jp2" / "text_GBR.jp2", components="channels")
    assert rgb.shape == (3, 1, 400, 400) and rgb.dtype == np.uint8
    full = imagecodecs.jpeg2k_decode((shared_data / "jp2" / "text_GBR.jp2").read_bytes())
    got = rgb.read((slice(0, 1), slice(10, 20), slice(30, 50)))
    np.testing.assert_array_equal(got[:, 0], np.moveaxis(full[10:20, 30:50], -1, 0))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_lossless_3d_round_trip_with_offsets(tmp_path, dtype):
    vol, _ = make_volume((9, 120, 140), seed=4, dtype=dtype)
    m = cut_tiles(vol, (2, 2), overlap=0.25)
    files = [write_jp2(tmp_path / f"t{i}.jp2", t) for i, t in enumerate(m.tiles)]
    vs = np.array([0.5, 0.2, 0.2])
    # the exm layout: row 0 = tile size (x, y, z) pixels, then x y z micrometres per tile
    size_xyz = np.array(m.tiles[0].shape[::-1], float)
    np.save(tmp_path / "offsets.npy", np.vstack([size_xyz, (m.offsets_px * vs)[:, ::-1]]))
    ts = Tileset.from_jp2(files, tmp_path / "offsets.npy", voxel_size=vs)
    assert [t.shape for t in ts] == [t.shape for t in m.tiles]
    for t, want in zip(ts, m.tiles, strict=True):
        assert t.dtype == dtype
        np.testing.assert_array_equal(t.read(), want)
    np.testing.assert_allclose(ts.offsets, m.offsets_px * vs)
    size, offs = read_exm_offsets(tmp_path / "offsets.npy", 4)
    np.testing.assert_allclose(offs, m.offsets_px * vs)
    assert tuple(size) == m.tiles[0].shape
    # fusion from JP2 equals fusion of the same tiles from TIFF, and the truth
    tiffs = [write_tiff(tmp_path / f"t{i}.tif", t) for i, t in enumerate(m.tiles)]
    from_tiff = Tileset.from_tiff(tiffs, m.offsets_px * vs, voxel_size=vs).fuse()
    fused = ts.fuse(chunks=(9, 48, 48))
    np.testing.assert_array_equal(fused, from_tiff)
    np.testing.assert_array_equal(fused, vol)


def test_csv_offsets_and_bad_input(tmp_path):
    t = write_jp2(tmp_path / "a.jp2", np.zeros((3, 8, 8), np.uint16))
    (tmp_path / "o.csv").write_text("z_um,y_um,x_um\n0,0,0\n0,0,5.5\n")
    ts = Tileset.from_jp2([t, t], tmp_path / "o.csv")
    np.testing.assert_allclose(ts.offsets[1], [0, 0, 5.5])
    with pytest.raises(TileConfigError, match="2 offset rows for 3 tiles"):
        Tileset.from_jp2([t, t, t], tmp_path / "o.csv")
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(TileConfigError, match="bad.npy: 2 offset rows for 1 tiles"):
        Tileset.from_jp2([t], tmp_path / "bad.npy")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TileConfigError, match="needs columns z, y, x"):
        Tileset.from_jp2([t], tmp_path / "x.csv")
    fake = tmp_path / "fake.jp2"
    fake.write_bytes(b"definitely not jpeg 2000" * 10)
    with pytest.raises(UnsupportedFormatError, match="fake.jp2"):
        Jp2Source(fake)
    with pytest.raises(ValueError, match="8- or 16-bit"):
        write_jp2(tmp_path / "f.jp2", np.zeros((4, 4), np.float32))
