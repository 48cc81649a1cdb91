import json

import numpy as np
import pytest

from tilefuse import MultiScaleGroup
from tilefuse.cli import main
from tilefuse.demo import write_demo
from tilefuse.io.tileconfig import read_tileconfig


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return write_demo(folder, shape=(12, 200, 220))


def test_demo_command(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "d"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "matches ground truth exactly: True" in out
    assert "after dedup" in out
    g_labels = MultiScaleGroup.open(tmp_path / "d" / "fused.ome.zarr" / "labels" / "cells")
    assert g_labels.n_levels == 3 and g_labels.kind == "label"
    g = MultiScaleGroup.open(tmp_path / "d" / "fused.ome.zarr")
    assert g.n_levels == 3 and g.is_complete
    assert (tmp_path / "d" / "labels" / "TileConfiguration.txt").is_file()
    labels = sorted((tmp_path / "d" / "labels").glob("*.tif"))
    assert len(labels) == 9


def test_info(demo, capsys):
    assert main(["info", str(demo.folder)]) == 0
    out = capsys.readouterr().out
    assert "tiles       9" in out and "overlaps    20 pairs" in out and "uint16" in out
    assert main(["info", str(demo.tileconfig), "--json", "--voxel-size", "0.5", "0.2", "0.2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tiles"] == 9 and info["voxel_size_um"] == [0.5, 0.2, 0.2]
    px = read_tileconfig(demo.tileconfig).entries[1].position_px
    assert px[2] > 0
    assert info["tile_list"][1]["offset_um"] == pytest.approx(
        [0.5 * px[0], 0.2 * px[1], 0.2 * px[2]]
    )


def test_stitch_and_rerun(demo, tmp_path, capsys):
    out = tmp_path / "o.ome.zarr"
    args = [
        "stitch",
        str(demo.folder),
        "-o",
        str(out),
        "--levels",
        "2",
        "--no-progress",
        "--chunks",
        "8",
        "64",
        "64",
    ]
    assert main(args) == 0
    g = MultiScaleGroup.open(out)
    np.testing.assert_array_equal(g.read(), demo.volume)
    assert g.n_levels == 2
    # an existing output is refused with a clear error and exit code 2
    assert main(args) == 2
    assert main([*args, "--overwrite", "--blend", "max", "--ngff-version", "0.4"]) == 0
    assert MultiScaleGroup.open(out).version == "0.4"
    assert main([*args, "--overwrite", "--compression", "fast"]) == 0
    meta = json.loads((out / "0" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner[-1]["configuration"]["cname"] == "lz4"
    np.testing.assert_array_equal(MultiScaleGroup.open(out).read(), demo.volume)


def test_errors_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "TileConfiguration.txt").write_text("dim = 3\nbroken line\n")
    assert main(["info", str(tmp_path)]) == 2
    assert "TileConfiguration.txt:2" in capsys.readouterr().err


def test_interrupted_stitch_is_completed_by_rerun(demo, tmp_path, monkeypatch):
    """A stitch that died half-way is finished by running the same command again."""
    from tilefuse import Tileset
    from tilefuse.io.tiff import TiffSource

    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    # the same tile files, but reading dies after a few reads (a crash mid-run);
    # the first 2 reads per tile are the pre-flight probe
    calls, read = [0], TiffSource._read

    def dying_read(self, region):
        calls[0] += 1
        if calls[0] > 2 * len(ts) + 6:
            raise RuntimeError("simulated crash")
        return read(self, region)

    monkeypatch.setattr(TiffSource, "_read", dying_read)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ts.fuse(out, chunks=(12, 64, 64), shards=(12, 64, 64), workers=1, levels=2)
    monkeypatch.setattr(TiffSource, "_read", read)
    assert not MultiScaleGroup.open(out).is_complete
    args = [
        "stitch",
        str(demo.folder),
        "-o",
        str(out),
        "--levels",
        "2",
        "--no-progress",
        "--chunks",
        "12",
        "64",
        "64",
        "--shards",
        "12",
        "64",
        "64",
    ]
    assert main(args) == 0
    g = MultiScaleGroup.open(out)
    assert g.is_complete
    np.testing.assert_array_equal(g.read(), demo.volume)


def test_dedup_command(demo, tmp_path, capsys):
    from tests_helpers import same_partition

    image = tmp_path / "img.ome.zarr"
    assert (
        main(["stitch", str(demo.folder), "-o", str(image), "--levels", "2", "--no-progress"]) == 0
    )
    table = tmp_path / "objects.csv"
    args = [
        "dedup",
        str(demo.labels_tileconfig),
        "-o",
        str(image),
        "--table",
        str(table),
        "--mapping",
        str(tmp_path / "map.npz"),
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    n_truth = len(np.unique(demo.labels)) - 1
    assert f"objects:       {n_truth} " in out
    g = MultiScaleGroup.open(image)
    assert g.labels == ["labels"]
    lab = g.open_labels("labels")
    assert lab.n_levels == 2
    assert same_partition(lab.read(), demo.labels)
    rows = table.read_text().splitlines()
    assert len(rows) == n_truth + 1
    assert (tmp_path / "map.npz").is_file()
    # labels exist now: refused without --overwrite
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0


def test_export_bdv_per_tile_and_fused(demo, tmp_path, capsys):
    from tilefuse import Tileset

    assert main(["export-bdv", str(demo.folder), "-o", str(tmp_path / "tiles.h5")]) == 0
    back = Tileset.open(tmp_path / "tiles.xml")
    assert len(back) == 9
    np.testing.assert_array_equal(back.fuse(), demo.volume)
    args = [
        "export-bdv",
        str(demo.folder),
        "-o",
        str(tmp_path / "fused.h5"),
        "--fused",
        "--no-progress",
    ]
    assert main(args) == 0
    fused = Tileset.open(tmp_path / "fused.xml")
    assert len(fused) == 1
    np.testing.assert_array_equal(fused[0].read(), demo.volume)
    assert not list(tmp_path.glob("tilefuse-export-*"))  # the scratch store is gone
    assert main(args) == 2  # exists: refused


def test_dedup_into_an_image_of_another_grid_is_refused(demo, tmp_path, capsys):
    """Labels at 1 um into an image stitched at (0.4, 0.17, 0.17) um: one line, exit 2."""
    vs = ["--voxel-size", "0.4", "0.17", "0.17"]
    image = tmp_path / "img.ome.zarr"
    assert main(["stitch", str(demo.folder), "-o", str(image), *vs, "--no-progress"]) == 0
    capsys.readouterr()
    dedup = ["dedup", str(demo.labels_tileconfig), "-o", str(image), "--no-progress"]
    assert main(dedup) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln]
    assert len(errors) == 1
    assert "grid" in errors[0] and "--resample-nearest" in errors[0]
    assert "labels" not in MultiScaleGroup.open(image).labels  # nothing written
    # the same labels at the image's voxel size: the exact object count
    assert main([*dedup, *vs]) == 0
    out = capsys.readouterr().out
    assert f"objects:       {len(np.unique(demo.labels)) - 1} " in out
