"""The reader registry: MIST, JPEG 2000 + exm offsets and TIFF folders + positions CSV open
through `Tileset.open` and the CLI; a new format is one small class plus one registry entry."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from tilefuse import Tileset
from tilefuse.cli import main
from tilefuse.errors import (
    MissingTileError,
    ReaderOptionError,
    TileConfigError,
    UnsupportedFormatError,
)
from tilefuse.io.ome_zarr import MultiScaleGroup
from tilefuse.io.registry import (
    Reader,
    find_reader,
    reader_names,
    register_reader,
    unregister_reader,
)
from tilefuse.io.tiff import write_tiff
from tilefuse.source import Source
from tilefuse.synthetic import cut_tiles, make_volume
from tilefuse.testing import SourceTests

MIST_LINE = re.compile(
    r"file: (\S+); corr: \S+; position: \((-?\d+), (-?\d+)\); grid: \((\d+), (\d+)\);"
)


def _mist_rows(folder):
    """The positions file parsed independently of tilefuse (as tests/test_mist.py does)."""
    rows = []
    for line in (folder / "reference" / "global-positions-1.txt").read_text().splitlines():
        m = MIST_LINE.match(line.strip())
        if m:
            rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


# -- MIST ---------------------------------------------------------------------------------


def test_mist_positions_file_and_folder_open(shared_data):
    folder = shared_data / "mist-5x5"
    rows = _mist_rows(folder)
    assert len(rows) == 25
    ts = Tileset.open(folder / "reference" / "global-positions-1.txt")
    assert find_reader(folder).name == "mist"  # the folder: positions found one level down
    again = Tileset.open(folder)
    for t in (ts, again):
        assert len(t) == 25 and t.is_2d and t.dtype == np.uint16
        assert [x.name for x in t] == [r[0] for r in rows]
        # MIST gives (x, y) pixels; offsets are (z, y, x)
        np.testing.assert_array_equal(t.offsets, [(0.0, r[2], r[1]) for r in rows])
    assert ts[0].shape == (1, 183, 245)
    assert ts[1].name == "ImageName_t01_p06.tif"
    assert ts[1].metadata["grid"] == (0, 1)  # MIST's "grid: (1, 0)" is (column, row)
    np.testing.assert_array_equal(ts[7].read()[0], tifffile.imread(folder / rows[7][0]))
    scaled = Tileset.open(folder, voxel_size=(1.0, 0.5, 0.25))
    np.testing.assert_allclose(scaled.offsets, ts.offsets * [1.0, 0.5, 0.25])


def test_mist_cli_stitch_equals_python_api(shared_data, tmp_path, capsys):
    folder = shared_data / "mist-5x5"
    positions = folder / "reference" / "global-positions-1.txt"
    rows = _mist_rows(folder)
    assert main(["info", str(positions)]) == 0
    out = capsys.readouterr().out
    assert "tiles       25" in out and "ImageName_t01_p25.tif" in out
    out_zarr = tmp_path / "mist.ome.zarr"
    argv = ["stitch", str(positions), "-o", str(out_zarr), "--blend", "overwrite"]
    assert main([*argv, "--levels", "1", "--no-progress"]) == 0
    fused = MultiScaleGroup.open(out_zarr).read()
    api = Tileset.open(positions).fuse(blend="overwrite")
    np.testing.assert_array_equal(fused, api)
    # the expectations of tests/test_mist.py: mosaic size, last tile intact at its position
    xs, ys = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    assert fused.shape == (1, ys.max() + 183 - ys.min(), xs.max() + 245 - xs.min())
    y0, x0 = ys[24] - ys.min(), xs[24] - xs.min()
    np.testing.assert_array_equal(
        fused[0, y0 : y0 + 183, x0 : x0 + 245], tifffile.imread(folder / rows[24][0])
    )
    assert (fused > 0).mean() > 0.95


def test_mist_bad_input(tmp_path):
    bad = tmp_path / "global-positions-1.txt"
    bad.write_text(
        "file: a.tif; corr: 0.5; position: (0, 0); grid: (0, 0);\n"
        "file: b.tif; corr: 0.5; position: (12 0); grid: (1, 0);\n"
    )
    with pytest.raises(TileConfigError, match=r"global-positions-1.txt:2"):
        Tileset.open(bad)
    bad.write_text("file: a.tif; corr: 0.5; position: (0, 0); grid: (0, 0);\n")
    with pytest.raises(MissingTileError, match="a.tif"):
        Tileset.open(bad)
    write_tiff(tmp_path / "b.tif", np.zeros((4, 5), np.uint8))
    assert main(["info", str(bad)]) == 2


# -- JPEG 2000 with exm offsets; TIFF folder with a positions CSV --------------------------


def _mosaic(seed, dtype=np.uint16):
    vol, _ = make_volume((6, 70, 90), seed=seed, dtype=dtype)
    return vol, cut_tiles(vol, (2, 2), overlap=0.25)


def test_jp2_folder_with_exm_offsets_cli_equals_api(tmp_path):
    from tilefuse.io.jp2 import write_jp2

    vol, m = _mosaic(5)
    vs = np.array([0.5, 0.2, 0.2])
    folder = tmp_path / "exm"
    folder.mkdir()
    files = [write_jp2(folder / f"fov_{i}.jp2", t) for i, t in enumerate(m.tiles)]
    size_xyz = np.array(m.tiles[0].shape[::-1], float)
    np.save(folder / "offsets.npy", np.vstack([size_xyz, (m.offsets_px * vs)[:, ::-1]]))
    api = Tileset.from_jp2(files, folder / "offsets.npy", voxel_size=vs)
    for path in (folder, folder / "offsets.npy"):
        ts = Tileset.open(path, voxel_size=tuple(vs))
        assert find_reader(path).name == "positions"
        assert [t.name for t in ts] == [f.name for f in files]
        np.testing.assert_allclose(ts.offsets, api.offsets)
    out = tmp_path / "fused.ome.zarr"
    argv = ["stitch", str(folder), "-o", str(out), "--voxel-size", *map(str, vs)]
    assert main([*argv, "--levels", "1", "--no-progress"]) == 0
    fused = MultiScaleGroup.open(out).read()
    np.testing.assert_array_equal(fused, api.fuse())
    np.testing.assert_array_equal(fused, vol)


@pytest.mark.parametrize("layout", ["file_px", "file_um", "ordered_um"])
def test_tiff_folder_with_positions_csv(tmp_path, capsys, layout):
    vol, m = _mosaic(6, np.uint8)
    vs = np.array([1.0, 0.4, 0.4])
    folder = tmp_path / "tiles"
    folder.mkdir()
    names = [f"tile_{i}.tif" for i in range(len(m.tiles))]
    for n, t in zip(names, m.tiles, strict=True):
        write_tiff(folder / n, t)
    px = m.offsets_px
    if layout == "file_px":  # rows in another order than the files, positions in pixels
        lines = ["file,z_px,y_px,x_px"] + [
            f"{names[i]},{px[i][0]},{px[i][1]},{px[i][2]}" for i in reversed(range(len(names)))
        ]
        order = list(reversed(range(len(names))))
    elif layout == "file_um":
        lines = ["filename,x,y,z"] + [
            f"{n},{p[2] * vs[2]},{p[1] * vs[1]},{p[0] * vs[0]}"
            for n, p in zip(names, px, strict=True)
        ]
        order = list(range(len(names)))
    else:  # no file column: rows are the files in natural order
        lines = ["z_um,y_um,x_um"] + [f"{p[0] * vs[0]},{p[1] * vs[1]},{p[2] * vs[2]}" for p in px]
        order = list(range(len(names)))
    (folder / "positions.csv").write_text("\n".join(lines) + "\n")
    ts = Tileset.open(folder, voxel_size=tuple(vs))
    assert [t.name for t in ts] == [names[i] for i in order]
    np.testing.assert_allclose(ts.offsets, px[order] * vs)
    np.testing.assert_array_equal(ts.fuse(), vol)
    same = Tileset.open(folder / "positions.csv", voxel_size=tuple(vs))
    np.testing.assert_allclose(same.offsets, ts.offsets)
    assert main(["info", str(folder), "--voxel-size", *map(str, vs)]) == 0
    assert "tiles       4" in capsys.readouterr().out


def test_positions_folder_errors(tmp_path):
    write_tiff(tmp_path / "a.tif", np.zeros((2, 4, 4), np.uint8))
    write_tiff(tmp_path / "b.tif", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "p.csv").write_text("z,y,x\n0,0,0\n0,0,3\n")
    (tmp_path / "q.csv").write_text("z,y,x\n0,0,0\n")
    with pytest.raises(TileConfigError, match="2 .*p.csv, q.csv.*--positions"):
        Tileset.open(tmp_path)
    ts = Tileset.open(tmp_path, positions=tmp_path / "p.csv")
    np.testing.assert_allclose(ts.offsets[:, 2], [0, 3])
    assert main(["info", str(tmp_path), "--positions", str(tmp_path / "p.csv")]) == 0
    with pytest.raises(TileConfigError, match="1 position rows for 2 tile files"):
        Tileset.open(tmp_path, positions=tmp_path / "q.csv")
    (tmp_path / "q.csv").write_text("z,y,x\n0,zero,0\n")
    with pytest.raises(TileConfigError, match="row 2: y='zero' is not a number"):
        Tileset.open(tmp_path / "q.csv")


# -- the registry ----------------------------------------------------------------------


def test_registry_errors_and_format_choice(tmp_path, shared_data):
    with pytest.raises(UnsupportedFormatError, match="no input format named 'nope'"):
        Tileset.open(tmp_path, format="nope")
    with pytest.raises(MissingTileError, match="input not found"):
        Tileset.open(tmp_path / "absent.txt")
    with pytest.raises(ReaderOptionError, match="takes no option voxel_size"):
        Tileset.open(shared_data / "nd2" / "cluster.nd2", voxel_size=(1, 1, 1))
    (tmp_path / "x.dat").write_bytes(b"\0" * 10)
    with pytest.raises(UnsupportedFormatError, match="supported inputs are") as e:
        Tileset.open(tmp_path / "x.dat")
    for name in reader_names():
        assert name in str(e.value)
    # an explicit format skips detection (a MIST file under another name)
    folder = shared_data / "mist-5x5"
    copy = tmp_path / "mist.log"
    copy.write_text((folder / "reference" / "global-positions-1.txt").read_text())
    assert len(Tileset.open(copy, format="mist", image_dir=folder)) == 25


def test_cli_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    out = capsys.readouterr().out
    for name in reader_names():
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", out, re.M), name


# -- a new format: one small class + one registry entry ---------------------------------


class NpzTileSource(Source):
    """One tile of an ``.npz`` mosaic file (arrays ``tile_N`` (z, y, x), ``offsets`` (n, 3) um).

    The open ``NpzFile`` is the handle: opened on the first read, closed by
    ``close()``, dropped when pickled.
    """

    def __init__(self, path, key):
        self.path, self.key = path, key
        with np.load(path) as f:
            arr = f[key]
        self._shape = (1, *arr.shape)
        self._dtype = arr.dtype

    def _open(self):
        return np.load(self.path)

    def _read(self, region):
        with self._locked() as f:
            return f[self.key][region][None]


def open_npz_mosaic(path, *, voxel_size=(1.0, 1.0, 1.0)):
    from tilefuse.geometry import affine_from_offset
    from tilefuse.tile import Tile

    with np.load(path) as f:
        keys = sorted((k for k in f.files if k.startswith("tile_")), key=lambda k: int(k[5:]))
        offsets = f["offsets"]
    return [
        Tile(NpzTileSource(path, k), affine_from_offset(voxel_size, o), name=k, index=i)
        for i, (k, o) in enumerate(zip(keys, offsets, strict=True))
    ]


NPZ_READER = Reader(
    "npz-mosaic",
    "an .npz file with tile_0, tile_1, ... (z, y, x) and offsets (n, 3) um",
    open_npz_mosaic,
    suffixes=(".npz",),
)


@pytest.fixture
def npz_format():
    register_reader(NPZ_READER)
    yield NPZ_READER
    unregister_reader(NPZ_READER.name)


@pytest.fixture
def npz_mosaic(tmp_path):
    vol, m = _mosaic(7)
    vs = (0.5, 0.25, 0.25)
    tiles = {f"tile_{i}": t for i, t in enumerate(m.tiles)}
    np.savez(tmp_path / "mosaic.npz", offsets=m.offsets_px * vs, **tiles)
    return tmp_path / "mosaic.npz", vol, m, vs


class TestNewFormatSource(SourceTests):
    @pytest.fixture
    def expected(self, npz_mosaic):
        return npz_mosaic[2].tiles[1][None]

    @pytest.fixture
    def source(self, npz_mosaic):
        return NpzTileSource(npz_mosaic[0], "tile_1")


def test_new_format_opens_through_tileset_open_and_cli(npz_format, npz_mosaic, capsys):
    path, vol, m, vs = npz_mosaic
    assert find_reader(path) is npz_format
    ts = Tileset.open(path, voxel_size=vs)
    assert len(ts) == 4
    np.testing.assert_allclose(ts.offsets, m.offsets_px * vs)
    np.testing.assert_array_equal(ts.fuse(), vol)
    assert main(["info", str(path), "--voxel-size", *map(str, vs)]) == 0
    out = capsys.readouterr().out
    assert "tiles       4" in out and "tile_3" in out
    assert main(["info", str(path), "--format", "npz-mosaic", "--json"]) == 0
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    assert "npz-mosaic" in capsys.readouterr().out


def test_new_format_is_gone_after_unregistering(npz_mosaic):
    with pytest.raises(UnsupportedFormatError, match="supported inputs are"):
        Tileset.open(npz_mosaic[0])


def test_readers_from_the_entry_point_group(monkeypatch, npz_mosaic):
    """A package publishing a Reader under ``tilefuse.readers`` is registered on first use."""
    import importlib.metadata

    from tilefuse.io import registry

    class EntryPoint:
        def __init__(self, name, obj):
            self.name, self.obj = name, obj

        def load(self):
            if isinstance(self.obj, Exception):
                raise self.obj
            return self.obj

    published = [
        EntryPoint("npz-mosaic", NPZ_READER),
        EntryPoint("broken", ImportError("plugin not installed")),  # logged, not fatal
        EntryPoint("not-a-reader", object()),
    ]

    def entry_points(group):
        return published if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert "npz-mosaic" in reader_names()
        assert len(Tileset.open(npz_mosaic[0])) == 4
        assert "broken" not in reader_names() and "not-a-reader" not in reader_names()
    finally:
        unregister_reader("npz-mosaic")
