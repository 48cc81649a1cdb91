import pickle

import numpy as np
import pytest
import tifffile

from tilefuse import Tile, Tileset
from tilefuse.errors import IncompatibleTilesError, MissingTileError, UnsupportedFormatError
from tilefuse.io.tiff import TiffSource, write_tiff
from tilefuse.tile import parse_affine


def test_tile_geometry_from_array():
    a = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    t = Tile.from_array(a, offset=(1.0, 2.5, -3.0), voxel_size=(2.0, 0.5, 0.5), name="t")
    assert t.shape == (4, 5, 6)
    assert t.n_channels == 1
    assert t.dtype == np.uint16
    np.testing.assert_allclose(t.offset, [1.0, 2.5, -3.0])
    np.testing.assert_allclose(t.voxel_size, [2.0, 0.5, 0.5])
    np.testing.assert_allclose(t.voxel_offset, [0.5, 5.0, -6.0])
    lo, hi = t.box
    # offset = centre of voxel 0; the box extends half a voxel beyond the end centres
    np.testing.assert_allclose(lo, [0.0, 2.25, -3.25])
    np.testing.assert_allclose(hi, [8.0, 4.75, -0.25])
    np.testing.assert_array_equal(t.read(((1, 3), (0, 2), (4, 6))), a[1:3, 0:2, 4:6])
    np.testing.assert_array_equal(np.asarray(t), a)


def test_tile_multichannel_and_2d():
    a = np.random.default_rng(0).integers(0, 100, (2, 3, 8, 9)).astype(np.uint8)
    t = Tile.from_array(a, channels=("dapi", "gfp"))
    assert t.n_channels == 2 and t.channels == ("dapi", "gfp")
    assert t.read().shape == (2, 3, 8, 9)
    np.testing.assert_array_equal(t.read(channel=1), a[1])
    t2 = Tile.from_array(a[0, 0])
    assert t2.shape == (1, 8, 9)
    np.testing.assert_array_equal(t2.read(), a[0, 0][None])
    with pytest.raises(ValueError, match="2 channels but 1"):
        Tile.from_array(a, channels=("one",))


@pytest.mark.parametrize(
    "bad", [np.eye(3), np.full((4, 4), np.nan), np.zeros((4, 4)), np.diag([1, 1, 1, 2.0])]
)
def test_parse_affine_rejects(bad):
    with pytest.raises(ValueError, match="affine"):
        parse_affine(bad)


@pytest.mark.parametrize("compress", [None, "zlib"])
def test_tiff_source_reads_regions(tmp_path, compress):
    a = np.random.default_rng(1).integers(0, 60000, (7, 33, 41)).astype(np.uint16)
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, a, compression=compress)
    src = TiffSource(p)
    assert src.shape == (1, 7, 33, 41)
    got = src.read((slice(2, 5), slice(10, 20), slice(0, 41)))
    np.testing.assert_array_equal(got[0], a[2:5, 10:20])
    # picklable by path, and reopens after pickling
    src2 = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(
        src2.read((slice(6, 7), slice(0, 3), slice(0, 3)))[0], a[6:7, :3, :3]
    )
    src.close()


def test_tiff_source_channels_imagej(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (2, 5, 16, 17)).astype(np.uint8)  # c z y x
    write_tiff(tmp_path / "c.tif", a)
    src = TiffSource(tmp_path / "c.tif")
    assert src.shape == (2, 5, 16, 17)
    np.testing.assert_array_equal(
        src.read((slice(1, 4), slice(0, 16), slice(3, 9))), a[:, 1:4, :, 3:9]
    )
    rgb = np.random.default_rng(3).integers(0, 255, (12, 13, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    s = TiffSource(tmp_path / "rgb.tif")
    assert s.shape == (3, 1, 12, 13)
    np.testing.assert_array_equal(
        s.read((slice(0, 1), slice(0, 12), slice(0, 13)))[:, 0], rgb.transpose(2, 0, 1)
    )


def test_tiff_errors_name_the_file(tmp_path):
    with pytest.raises(MissingTileError, match="nope.tif"):
        TiffSource(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff at all")
    with pytest.raises(UnsupportedFormatError, match="bad.tif"):
        TiffSource(bad)


def test_from_tiff_and_skip_missing(tmp_path):
    a = np.zeros((2, 8, 8), np.uint16)
    files = [write_tiff(tmp_path / f"t{i}.tif", a + i) for i in range(3)]
    files.insert(1, tmp_path / "gone.tif")
    offs = [(0, 0, 0), (0, 0, 4), (0, 0, 8), (0, 0, 12)]
    with pytest.raises(MissingTileError, match="gone.tif"):
        Tileset.from_tiff(files, offs)
    ts = Tileset.from_tiff(files, offs, skip_missing=True)
    assert [t.name for t in ts] == ["t0.tif", "t1.tif", "t2.tif"]
    assert [t.index for t in ts] == [0, 1, 2]
    np.testing.assert_allclose(ts.offsets[:, 2], [0, 8, 12])


def test_mixed_dimensionality_is_an_error():
    with pytest.raises(IncompatibleTilesError, match="mixed dimensionality"):
        Tileset.from_arrays([np.zeros((8, 8)), np.zeros((3, 8, 8))], [(0, 0, 0), (0, 0, 4)])
    with pytest.raises(IncompatibleTilesError, match="uint8"):
        Tileset.from_arrays(
            [np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint16)], [(0, 0, 0), (0, 0, 4)]
        )


def test_tiff_big_endian_reads_native_values(tmp_path):
    a = np.random.default_rng(4).integers(0, 60000, (3, 10, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", a, byteorder=">", photometric="minisblack")
    src = TiffSource(tmp_path / "be.tif")
    got = src.read((slice(0, 3), slice(2, 7), slice(0, 12)))[0]
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, a[:, 2:7])
