import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.errors import MissingTileError, TileConfigError, UnsupportedFormatError
from tilefuse.io.tiff import write_tiff
from tilefuse.io.tileconfig import read_tileconfig, write_tileconfig

CFG3 = """# Define the number of dimensions we are working on
dim = 3

# Define the image coordinates
a.tif; ; (0.0, 0.0, 0.0)
b.tif; ; (90.5, -2.25, 1.0)
"""

CFG2_REGISTERED = """# Define the number of dimensions we are working on
dim = 2
# Define the image coordinates
a.tif; ; (0.0, 0.0)
b.tif;;(57.3, 12.0)
"""


def test_read_3d_xyz_to_zyx(tmp_path):
    p = tmp_path / "TileConfiguration.txt"
    p.write_text(CFG3)
    cfg = read_tileconfig(p)
    assert cfg.dim == 3
    assert [e.file for e in cfg.entries] == ["a.tif", "b.tif"]
    assert cfg.entries[1].position_px == (1.0, -2.25, 90.5)
    assert cfg.entries[1].series is None


def test_read_2d_registered_and_series(tmp_path):
    p = tmp_path / "TileConfiguration.registered.txt"
    p.write_text(CFG2_REGISTERED + "stack.czi; 3; (1, 2)\n")
    cfg = read_tileconfig(p)
    assert cfg.dim == 2
    assert cfg.entries[1].position_px == (0.0, 12.0, 57.3)
    assert cfg.entries[2].series == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dim = 3\na.tif; ; (1, 2)\n", r":2: dim = 3 but the line has 2"),
        ("dim = 3\na.tif  (1, 2, 3)\n", r":2: expected 'file"),
        ("dim = 2\na.tif; ; (1, x)\n", r":2: coordinates are not numbers"),
        ("a.tif; ; (1, 2)\n", r":1: image line before"),
        ("dim = 4\n", r":1: dim must be 2 or 3"),
        ("# nothing\n", "no 'dim = N' line"),
        ("dim = 2\n", "lists no image"),
        ("dim = 2\na.tif; q; (1, 2)\n", "series index"),
    ],
)
def test_malformed_tileconfig(tmp_path, text, match):
    p = tmp_path / "TileConfiguration.txt"
    p.write_text(text)
    with pytest.raises(TileConfigError, match=match) as e:
        read_tileconfig(p)
    assert str(p) in str(e.value)


def test_round_trip_write_read(tmp_path):
    pos = np.array([[0, 0, 0], [1.5, 10.25, 20.0], [3.0, -4.0, 7.125]])
    p = write_tileconfig(tmp_path / "TileConfiguration.txt", ["a.tif", "b.tif", "c.tif"], pos)
    cfg = read_tileconfig(p)
    np.testing.assert_array_equal([e.position_px for e in cfg.entries], pos)


def _write_tiles(folder, n=3, shape=(4, 16, 20)):
    names = []
    for i in range(n):
        write_tiff(folder / f"t{i}.tif", np.full(shape, i + 1, np.uint16))
        names.append(f"t{i}.tif")
    return names


def test_from_tileconfig_positions_in_micrometres(tmp_path):
    names = _write_tiles(tmp_path)
    pos = np.array([[0, 0, 0], [0, 0, 15], [2, 12, 0.5]])
    write_tileconfig(tmp_path / "TileConfiguration.txt", names, pos)
    ts = Tileset.from_tileconfig(tmp_path / "TileConfiguration.txt", voxel_size=(2.0, 0.5, 0.5))
    assert len(ts) == 3
    np.testing.assert_allclose(ts.offsets, pos * [2.0, 0.5, 0.5])
    np.testing.assert_allclose(ts.voxel_size, [2.0, 0.5, 0.5])
    # folder input finds the file, and the registered file wins over the plain one
    write_tileconfig(tmp_path / "TileConfiguration.registered.txt", names, pos + 1)
    ts2 = Tileset.open(tmp_path)
    np.testing.assert_allclose(ts2.offsets, pos + 1)


def test_missing_tile_named_unless_skipped(tmp_path):
    names = _write_tiles(tmp_path, 2)
    write_tileconfig(tmp_path / "TileConfiguration.txt", [*names, "lost.tif"], np.zeros((3, 3)))
    with pytest.raises(MissingTileError, match=r"TileConfiguration.txt:7: tile 'lost.tif'"):
        Tileset.from_tileconfig(tmp_path / "TileConfiguration.txt")
    ts = Tileset.from_tileconfig(tmp_path / "TileConfiguration.txt", skip_missing=True)
    assert len(ts) == 2


def test_2d_config_with_2d_tiles(tmp_path):
    for i in range(2):
        write_tiff(tmp_path / f"p{i}.tif", np.full((10, 12), i, np.uint8))
    (tmp_path / "TileConfiguration.txt").write_text("dim = 2\np0.tif; ; (0, 0)\np1.tif; ; (8, 0)\n")
    ts = Tileset.open(tmp_path / "TileConfiguration.txt")
    assert ts.is_2d and ts[0].shape == (1, 10, 12)
    fused = ts.fuse(blend="overwrite")
    assert fused.shape == (1, 10, 20)


def test_open_unsupported(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(UnsupportedFormatError, match="supported inputs"):
        Tileset.open(tmp_path / "x.csv")
    with pytest.raises(UnsupportedFormatError):
        Tileset.open(tmp_path)
    with pytest.raises(MissingTileError):
        Tileset.open(tmp_path / "nothing-here")
