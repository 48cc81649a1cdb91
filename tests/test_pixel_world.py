"""Projects in BigDataViewer's pixel world (no calibration transform), as pipelines write them.

Built like a real 38-tile x 5-channel expansion-microscopy project: voxel 0.242 x 0.242 x 1.0 um
(x, y, z), each view registered by one translation in voxels and nothing else, BigStitcher's
pairwise results (with their hashes) in <StitchingResults>.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from tilefuse import Tileset
from tilefuse.cli import main
from tilefuse.synthetic import cut_tiles, make_volume

etree = pytest.importorskip("lxml.etree")
LINT = SHARED_DATA.parent / "tools" / "spimdata_lint.py"
VOXEL = (1.0, 0.242, 0.242)  # (z, y, x) um
N_CHANNELS = 5


def _pixel_world_project(folder: Path, grid=(2, 19)):
    """A BDV-HDF5 project whose views are placed by voxel translations only (no calibration)."""
    vol = np.stack([make_volume((4, 30, 200), seed=c, n_blobs=10)[0] for c in range(N_CHANNELS)])
    mosaic = cut_tiles(vol, grid, tile_shape=(18, 16))
    ts = Tileset.from_arrays(mosaic.tiles, mosaic.offsets_px * VOXEL, VOXEL)
    _, xml = ts.to_bdv(folder / "exm.h5")
    tree = etree.parse(str(xml))
    root = tree.getroot()
    tile_of = {
        int(vs.findtext("id")): int(vs.findtext("attributes/tile")) for vs in root.iter("ViewSetup")
    }
    for reg in root.iter("ViewRegistration"):
        for old in reg.findall("ViewTransform"):
            reg.remove(old)
        z, y, x = mosaic.offsets_px[tile_of[int(reg.get("setup"))]]
        tr = etree.SubElement(reg, "ViewTransform", type="affine")
        etree.SubElement(tr, "Name").text = "Translation to Regular Grid"
        etree.SubElement(tr, "affine").text = f"1.0 0.0 0.0 {x} 0.0 1.0 0.0 {y} 0.0 0.0 1.0 {z}"
    results = etree.SubElement(root, "StitchingResults")
    for a, b, h in ((0, 1, "-1234.5678901234567"), (0, 19, "987.0000000000001")):
        pr = etree.SubElement(
            results, "PairwiseResult", view_setup_a=str(a * N_CHANNELS),
            view_setup_b=str(b * N_CHANNELS), tp_a="0", tp_b="0",
        )  # fmt: skip
        etree.SubElement(pr, "shift").text = "1.0 0.0 0.0 -0.5 0.0 1.0 0.0 0.25 0.0 0.0 1.0 0.0"
        etree.SubElement(pr, "correlation").text = "0.93"
        etree.SubElement(pr, "hash").text = h
        etree.SubElement(pr, "overlap_boundingbox").text = "0 0 0 10 10 4"
    tree.write(str(xml), xml_declaration=True, encoding="UTF-8")
    return xml, mosaic


def test_pixel_world_project_opens_with_physical_z_and_writes_back(tmp_path, caplog):
    project = tmp_path / "project"
    project.mkdir()
    xml, mosaic = _pixel_world_project(project)
    with caplog.at_level(logging.WARNING, logger="tilefuse.io.spimdata"):
        ts = Tileset.open(xml)  # no arguments
    assert caplog.text.count("world units are voxels") == 1
    assert len(ts) == 38 and ts.n_channels == N_CHANNELS
    np.testing.assert_allclose(ts[0].voxel_size, VOXEL, rtol=1e-12)
    np.testing.assert_allclose(ts.offsets, mosaic.offsets_px * VOXEL, rtol=1e-12, atol=1e-12)
    lo, hi = ts.bounds
    assert hi[0] - lo[0] == pytest.approx(4 * 1.0)  # 4 planes of 1 um, not of 0.242 um
    assert hi[2] - lo[2] == pytest.approx(200 * 0.242)
    np.testing.assert_array_equal(ts[7].read(), mosaic.tiles[7])
    fused = ts.fuse(blend="overwrite")
    np.testing.assert_array_equal(fused, mosaic.volume)

    # move two tiles by whole voxels and write the project back somewhere else
    moved_offsets = ts.offsets.copy()
    moved_offsets[3] += np.array([0, 2, -1]) * VOXEL
    moved_offsets[20] += np.array([1, 0, 3]) * VOXEL
    out_dir = tmp_path / "elsewhere" / "deeper"
    out = ts.with_offsets(moved_offsets).to_bigstitcher_xml(out_dir / "registered.xml")
    if LINT.exists():
        res = subprocess.run([sys.executable, str(LINT), str(out)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    src, dst = etree.parse(str(xml)).getroot(), etree.parse(str(out)).getroot()
    # BasePath stays relative, recomputed for the new location
    base = dst.find("BasePath")
    assert base.get("type") == "relative" and base.text == "../../project"
    assert (out_dir / base.text).resolve() == project.resolve()
    # every PairwiseResult kept as written, hash included
    before = [etree.tostring(e, method="c14n") for e in src.iter("PairwiseResult")]
    after = [etree.tostring(e, method="c14n") for e in dst.iter("PairwiseResult")]
    assert len(before) == 2

    def canon(items):  # indentation differs; the content may not
        return [b"".join(x.split()) for x in items]

    assert canon(after) == canon(before)
    assert [e.findtext("hash") for e in dst.iter("PairwiseResult")] == [
        "-1234.5678901234567",
        "987.0000000000001",
    ]
    # the new transform is in world units of the pixel world: whole voxels per axis
    added = {
        int(r.get("setup")): r.find("ViewTransform")
        for r in dst.iter("ViewRegistration")
        if r.find("ViewTransform").findtext("Name") == "tilefuse registration"
    }
    assert sorted(added) == [s for t in (3, 20) for s in range(t * N_CHANNELS, (t + 1) * 5)]
    shift = [float(v) for v in added[3 * N_CHANNELS].findtext("affine").split()][3::4]
    np.testing.assert_allclose(shift, [-1, 2, 0], atol=1e-9)  # x y z voxels

    # our output opens again (relative BasePath resolves) and load_positions reads it back
    back = ts.load_positions(out)
    np.testing.assert_allclose(back.offsets, moved_offsets, rtol=1e-12, atol=1e-9)
    reopened = Tileset.open(out)
    np.testing.assert_allclose(reopened.offsets, moved_offsets, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(reopened[3].read(), mosaic.tiles[3])


def test_world_unit_override_is_per_axis_and_kept(tmp_path):
    xml, mosaic = _pixel_world_project(tmp_path, grid=(1, 3))
    w = (2.0, 0.5, 0.5)
    ts = Tileset.from_bigstitcher(xml, world_unit_um=w)
    np.testing.assert_allclose(ts.offsets, mosaic.offsets_px * w, atol=1e-12)
    assert ts[0].metadata["world_unit_um"] == list(w)
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        Tileset.from_bigstitcher(xml, world_unit_um=0.242)
    # written back and read back with the unit of the open, not a re-inferred one
    moved = ts.offsets.copy()
    moved[1] += (2.0, 1.0, 0.5)
    out = ts.with_offsets(moved).to_bigstitcher_xml(tmp_path / "out" / "moved.xml")
    np.testing.assert_allclose(ts.load_positions(out).offsets, moved, atol=1e-9)
    # the CLI takes the same override
    assert main(["info", str(xml), "--world-unit", "2", "0.5", "0.5", "--json"]) == 0


def test_pixel_units_stay_pixel(shared_data, tmp_path, capsys):
    """A project whose voxel size has no unit fuses to an OME-Zarr whose axes name no unit."""
    import zarr

    from tilefuse.io.ome_zarr import MultiScaleGroup

    ts = Tileset.open(shared_data / "bdv-h5" / "pybdv_example.xml")  # <unit></unit>
    assert ts[0].metadata["unit"] == "pixel"
    out = ts.fuse(tmp_path / "px.ome.zarr")
    attrs = zarr.open_group(str(out.path), mode="r").attrs.asdict()
    axes = (attrs.get("ome") or attrs)["multiscales"][0]["axes"]
    assert [a for a in axes if a["type"] == "space" and "unit" in a] == []
    assert MultiScaleGroup.open(out.path).unit is None
    assert main(["info", str(shared_data / "bdv-h5" / "pybdv_example.xml")]) == 0
    assert "pixel (no unit in the input)" in capsys.readouterr().out
    # micrometre projects keep micrometres
    vol = make_volume((2, 8, 8), seed=0)[0]
    um = Tileset.from_arrays([vol], [(0.0, 0.0, 0.0)], VOXEL).fuse(tmp_path / "um.ome.zarr")
    assert MultiScaleGroup.open(um.path).unit == "micrometer"
