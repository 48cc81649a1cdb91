"""Intensity corrections against synthetic ground truth (known vignetting, gains, offsets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tilefuse import Tileset
from tilefuse.correction import Corrections, clipped_voxels
from tilefuse.errors import CorrectionError, IncompatibleTilesError
from tilefuse.shading import estimate_shading
from tilefuse.synthetic import make_volume, shaded_mosaic, vignetting


def _volume(shape, density=1.0, seed=2):
    n = max(1, int(np.prod(shape) / 4000 * density))
    vol, _ = make_volume(shape, n_blobs=n, seed=seed, dtype=np.float32)
    return vol.astype(np.float64) * 20000 + 500


def _rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - b) ** 2)))


def _rel(fused, truth):
    return _rms(fused, truth) / float(np.sqrt(np.mean(truth**2)))


@pytest.fixture(scope="module")
def mosaic2d():
    sm = shaded_mosaic(_volume((1, 560, 560)), (4, 4), corner=0.45, reference=5, seed=3)
    return sm, Tileset.from_arrays(sm.tiles, sm.offsets_px)


@pytest.fixture(scope="module")
def mosaic3d():
    sm = shaded_mosaic(_volume((8, 480, 480)), (4, 4), corner=0.35, reference=5, seed=4)
    return sm, Tileset.from_arrays(sm.tiles, sm.offsets_px)


@pytest.mark.parametrize("density", [0.25, 4.0])
def test_flatfield_recovered_2d_any_object_density(density):
    sm = shaded_mosaic(_volume((1, 560, 560), density), (4, 4), corner=0.45, seed=5)
    ts = Tileset.from_arrays(sm.tiles, sm.offsets_px)
    corr = ts.estimate_corrections(offsets=True)
    err = _rms(corr.flatfield[0] / sm.flatfield, 1.0)
    assert err < 0.03, err
    # the corners really were 45 % darker: the estimate is far from flat
    assert corr.flatfield[0].min() < 0.75


def test_flatfield_recovered_3d(mosaic3d):
    sm, ts = mosaic3d
    model = estimate_shading(ts.tiles, max_planes=100)
    assert model.n_planes == 100  # a bounded sample, not every plane
    assert _rms(model.flatfield / sm.flatfield, 1.0) < 0.03


@pytest.mark.parametrize("fixture", ["mosaic2d", "mosaic3d"])
def test_gains_offsets_and_fused_volume_with_known_flatfield(fixture, request):
    sm, ts = request.getfixturevalue(fixture)
    corr = ts.estimate_corrections(flatfield=sm.flatfield, offsets=True, reference=5)
    # a tile's correction undoes its gain: a_k = 1 / g_k (the reference has g = 1)
    np.testing.assert_allclose(corr.gains[:, 0] * sm.gains, 1.0, atol=0.02)
    np.testing.assert_allclose(corr.offsets[:, 0], -sm.tile_offsets / sm.gains, atol=0.02 * 500)
    fused = ts.correct(corr).fuse(blend="linear")
    assert fused.dtype == np.uint16
    assert _rel(fused, sm.volume[0] if ts.is_2d else sm.volume) < 0.02
    raw = ts.fuse(blend="linear")
    assert _rel(raw, sm.volume[0] if ts.is_2d else sm.volume) > 0.1


@pytest.mark.parametrize("fixture", ["mosaic2d", "mosaic3d"])
def test_blind_corrections_meet_the_accuracy_targets(fixture, request):
    """Everything estimated from the tiles alone (vignetting, gains 0.7-1.4, offsets):
    flat-field within 3 % RMS, gains within 2 %, the fused volume within 2 % of the truth."""
    sm, ts = request.getfixturevalue(fixture)
    truth = sm.volume[0] if ts.is_2d else sm.volume
    corr = ts.estimate_corrections(offsets=True, reference=5)
    assert _rms(corr.flatfield[0] / sm.flatfield, 1.0) < 0.03
    assert np.abs(corr.gains[:, 0] * sm.gains - 1).max() < 0.02
    cts = ts.correct(corr)
    assert _rel(cts.fuse(blend="linear"), truth) < 0.02
    assert _rel(ts.fuse(blend="linear"), truth) > 0.1  # the uncorrected mosaic is far off
    before, after = ts.seam_metric().score, cts.seam_metric().score
    assert before > 1.5
    assert after < 1.01
    # centred vignetting: "auto" found no ramp beyond the sample's noise
    assert corr.info["ramp"]["0"]["factor"] == 0.0


def _gradient_mosaic():
    """Vignetting times a +-25 % illumination gradient along x: not symmetric."""
    from tilefuse.synthetic import cut_tiles

    vol = _volume((1, 560, 560))
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    ny, nx = m.tiles[0].shape[-2:]
    y = (np.arange(ny) + 0.5) / ny * 2 - 1
    x = (np.arange(nx) + 0.5) / nx * 2 - 1
    flat = (1 + 0.25 * x[None, :]) * (1 - 0.15 * (y[:, None] ** 2 + x[None, :] ** 2))
    flat /= flat.mean()
    gains = np.random.default_rng(3).uniform(0.7, 1.4, 16)
    gains[5] = 1.0
    tiles = [np.rint(flat * g * t).astype(np.uint16) for t, g in zip(m.tiles, gains, strict=True)]
    return vol, flat, gains, Tileset.from_arrays(tiles, m.offsets_px)


def test_an_illumination_gradient_is_kept_by_auto_and_removed_by_centred():
    """The flat-field's log-linear ramp is invisible to overlaps; "auto" keeps the sample's
    ramp when it stands out of the sample's noise, "centred" assumes symmetric optics."""
    from tilefuse.shading import log_ramp

    vol, flat, gains, ts = _gradient_mosaic()
    auto = ts.estimate_corrections(reference=5)
    rep = auto.info["ramp"]["0"]
    assert rep["mode"] == "auto" and rep["factor"] > 0.9
    assert rep["sample_noise"] > 0
    true_slope = log_ramp(flat)
    np.testing.assert_allclose(log_ramp(auto.flatfield[0]), true_slope, atol=0.2 * true_slope[1])
    assert np.abs(auto.gains[:, 0] * gains - 1).max() < 0.08
    assert _rel(ts.correct(auto).fuse(blend="linear"), vol[0]) < 0.04
    centred = ts.estimate_corrections(reference=5, ramp="centred")
    np.testing.assert_allclose(log_ramp(centred.flatfield[0]), 0.0, atol=1e-6)
    # ... which pushes the gradient into the gains: far worse here, as documented
    assert np.abs(centred.gains[:, 0] * gains - 1).max() > 0.2
    # whatever the ramp, the mosaic is seamless: the ramp is what overlaps cannot see
    assert ts.correct(centred).seam_metric().score < 1.01
    with pytest.raises(CorrectionError, match="ramp must be one of"):
        ts.estimate_corrections(ramp="sideways")


def test_a_camera_dark_level_is_subtracted_when_given(tmp_path, capsys):
    """An offset outside the shading (raw = F * x + 400) is divided by F if left in the data;
    given as a number (darkfield=400, --dark-level 400) it is subtracted first."""
    from tilefuse.cli import main
    from tilefuse.io.tiff import write_tiff
    from tilefuse.io.tileconfig import write_tileconfig
    from tilefuse.synthetic import cut_tiles

    vol = _volume((1, 560, 560))
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    flat = vignetting(m.tiles[0].shape[-2:], 0.4)
    gains = np.random.default_rng(3).uniform(0.7, 1.4, 16)
    gains[5] = 1.0
    tiles = [
        np.rint(flat * g * t + 400).astype(np.uint16) for t, g in zip(m.tiles, gains, strict=True)
    ]
    ts = Tileset.from_arrays(tiles, m.offsets_px)
    left_in = ts.estimate_corrections(reference=5)
    subtracted = ts.estimate_corrections(reference=5, darkfield=400)
    assert _rms(left_in.flatfield[0] / flat, 1.0) > 0.02
    assert _rms(subtracted.flatfield[0] / flat, 1.0) < 0.01
    np.testing.assert_allclose(subtracted.darkfield, 400.0)
    np.testing.assert_allclose(subtracted.gains[:, 0] * gains, 1.0, atol=0.01)
    names = []
    for k, t in enumerate(tiles):
        names.append(f"t{k}.tif")
        write_tiff(tmp_path / names[-1], t)
    write_tileconfig(tmp_path / "TileConfiguration.txt", names, m.offsets_px)
    npz = tmp_path / "c.npz"
    assert main(["correct", str(tmp_path), "-o", str(npz), "--dark-level", "400",
                 "--reference", "5"]) == 0  # fmt: skip
    np.testing.assert_allclose(Corrections.load(npz).darkfield, 400.0)
    capsys.readouterr()
    both = ["correct", str(tmp_path), "-o", str(tmp_path / "x.npz"), "--dark-level", "4",
            "--darkfield"]  # fmt: skip
    assert main(both) == 2
    assert "choose one of --darkfield" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_flatfield_refinement_dense_and_sparse_agree(mosaic2d, monkeypatch):
    """Large mosaics solve the refinement's normal equations with a sparse LU: same answer."""
    import tilefuse.shading as shading

    _, ts = mosaic2d
    dense = ts.estimate_corrections(offsets=True, reference=5)
    monkeypatch.setattr(shading, "DENSE_UNKNOWNS", 0)
    sparse = ts.estimate_corrections(offsets=True, reference=5)
    np.testing.assert_allclose(sparse.flatfield, dense.flatfield, rtol=1e-4)
    np.testing.assert_allclose(sparse.gains, dense.gains, rtol=1e-4)


def _dark_mosaic(shape, dark):
    """4 x 4 tiles: flat * gain * truth + dark (a camera offset or pattern outside the shading)."""
    from tilefuse.synthetic import cut_tiles

    vol = _volume(shape)
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    flat = vignetting(m.tiles[0].shape[-2:], 0.4)
    ny, nx = flat.shape
    xx = np.arange(nx)[None, :] + np.zeros((ny, 1))
    d = {"offset": np.full((ny, nx), 400.0), "pattern": 300 + 200 * xx / nx}[dark]
    gains = np.random.default_rng(3).uniform(0.7, 1.4, 16)
    gains[5] = 1.0
    tiles = [
        np.rint(flat * g * t + d).astype(np.uint16) for t, g in zip(m.tiles, gains, strict=True)
    ]
    return flat, d, gains, Tileset.from_arrays(tiles, m.offsets_px)


@pytest.mark.parametrize("dark", ["offset", "pattern"])
@pytest.mark.parametrize("shape", [(1, 560, 560), (8, 480, 480)], ids=["2D", "3D"])
def test_darkfield_fitted_to_the_overlaps_on_a_structured_mosaic(shape, dark):
    """The sample alone takes the content for an additive pattern; the overlaps tell the
    dark-field from the content (one pair of positions: an affine relation whose intercept
    the dark-field sets). Left in, the dark level biases the flat-field by 4 %."""
    flat, d, gains, ts = _dark_mosaic(shape, dark)
    ignored = ts.estimate_corrections(reference=5)
    assert _rms(ignored.flatfield[0] / flat, 1.0) > 0.03
    corr = ts.estimate_corrections(reference=5, darkfield=True)
    assert _rms(corr.flatfield[0] / flat, 1.0) < 0.015
    assert np.abs(corr.gains[:, 0] * gains - 1).max() < 0.015
    # gains only: the dark-field is whole (the camera's offset included)
    assert _rms(corr.darkfield[0], d) < 0.2 * float(np.mean(d))
    # given, the dark-field comes off before the sample estimate too (its gradient is no ramp)
    given = ts.estimate_corrections(reference=5, darkfield=d)
    assert _rms(given.flatfield[0] / flat, 1.0) < 0.01
    assert np.abs(given.gains[:, 0] * gains - 1).max() < 0.005
    with_offsets = ts.estimate_corrections(reference=5, darkfield=True, offsets=True)
    assert _rms(with_offsets.flatfield[0] / flat, 1.0) < 0.015
    assert np.abs(with_offsets.gains[:, 0] * gains - 1).max() < 0.01
    assert abs(float(with_offsets.darkfield.mean())) < 1.0  # with offsets: known up to k * F


def test_a_dark_field_the_overlaps_cannot_fit_is_refused(mosaic3d, monkeypatch):
    """Were the overlap fit to fail, the sample's profiles would be kept, and with a
    dark-field they can be tens of percent off: refused, with what to do instead."""
    import tilefuse.correction as correction
    import tilefuse.shading as shading

    def keep_prior(samples, gains, offsets, prior, **kw):
        return prior.astype(np.float32)

    monkeypatch.setattr(shading, "refine_flatfield", keep_prior)
    _, ts = mosaic3d
    with pytest.raises(CorrectionError, match="not usable") as err:
        ts.estimate_corrections(reference=5, darkfield=True)
    assert "--dark-level" in str(err.value)
    assert correction.MAX_DISAGREEMENT == 0.10
    monkeypatch.undo()
    corr = ts.estimate_corrections(reference=5)
    assert 0 < corr.info["overlaps_vs_sample_rms"]["0"] < 0.05


def test_log_ramp_and_set_ramp():
    from tilefuse.shading import log_ramp, set_ramp

    ny, nx = 40, 60
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    bowl = 1 - 0.3 * ((y[:, None] / ny) ** 2 + (x[None, :] / nx) ** 2)
    np.testing.assert_allclose(log_ramp(bowl), 0.0, atol=1e-12)  # symmetric: no ramp
    tilted = bowl * np.exp(0.002 * y[:, None] - 0.001 * x[None, :])
    np.testing.assert_allclose(log_ramp(tilted), [0.002, -0.001], rtol=1e-9)
    back = set_ramp(tilted, (0.0, 0.0))
    np.testing.assert_allclose(back, bowl / bowl.mean(), rtol=1e-5)
    assert abs(float(back.mean()) - 1) < 1e-6


def test_blank_tiles_do_not_break_the_solve():
    vol = _volume((1, 560, 560))
    sm = shaded_mosaic(vol, (4, 4), corner=0.4, reference=5, seed=6)
    tiles = list(sm.tiles)
    rng = np.random.default_rng(0)
    blank = [0, 15]
    for k in blank:  # no tissue: camera offset + noise only
        tiles[k] = rng.normal(300, 5, tiles[k].shape).round().astype(np.uint16)
    ts = Tileset.from_arrays(tiles, sm.offsets_px)
    corr = ts.estimate_corrections(flatfield=sm.flatfield, reference=5)
    links = corr.info["links"]["0"]
    assert set(links["unlinked_tiles"]) == set(blank)
    assert links["unusable"] >= 6  # every overlap of a blank tile
    np.testing.assert_allclose(corr.gains[blank, 0], 1.0, atol=1e-3)  # left alone
    others = [k for k in range(16) if k not in blank]
    # gain-only model of data with small offsets: within a few percent
    np.testing.assert_allclose(corr.gains[others, 0] * sm.gains[others], 1.0, atol=0.05)
    assert np.all(np.isfinite(ts.correct(corr).fuse(blend="linear")))
    # blind (flat-field estimated and refined with the overlaps): the blank tiles have no
    # overlap samples and change nothing
    blind = ts.estimate_corrections(offsets=True, reference=5)
    assert _rms(blind.flatfield[0] / sm.flatfield, 1.0) < 0.02
    np.testing.assert_allclose(blind.gains[others, 0] * sm.gains[others], 1.0, atol=0.02)
    np.testing.assert_allclose(blind.gains[blank, 0], 1.0, atol=1e-3)


def test_disagreeing_link_is_dropped():
    sm = shaded_mosaic(_volume((1, 400, 400)), (3, 3), corner=0.0, reference=4, seed=7)
    tiles = list(sm.tiles)
    # tile 2's right half is 30 % brighter than the rest of it (a local artefact):
    # its link to tile 5 (below) sees a different gain than its link to tile 1
    t = tiles[2].astype(np.float64)
    t[..., t.shape[-2] // 2 :, :] *= 1.3
    tiles[2] = t.round().astype(np.uint16)
    ts = Tileset.from_arrays(tiles, sm.offsets_px)
    corr = ts.estimate_corrections(flatfield=False, offsets=True, reference=4, min_ncc=0.0)
    dropped = [tuple(x) for x in corr.info["links"]["0"]["dropped"]]
    assert dropped and all(2 in pair for pair in dropped)


def test_darkfield_recovered_from_planes_of_varied_brightness():
    """The identifiable case (e.g. a fluorescent slide at several intensities): F and D both."""
    rng = np.random.default_rng(0)
    ny, nx = 120, 150
    flat = vignetting((ny, nx), 0.4)
    yy, xx = np.mgrid[0:ny, 0:nx]
    dark = 300 + 200 * (xx / nx) + 100 * np.sin(yy / ny * 3)
    levels = np.geomspace(200, 5000, 30)
    planes = [
        np.rint(flat * b * (1 + 0.02 * rng.standard_normal((ny, nx))) + dark).astype(np.uint16)
        for b in levels
    ]
    ts = Tileset.from_arrays(planes, np.zeros((30, 3)))
    model = estimate_shading(ts.tiles, darkfield=True)
    # the dark-field is known up to a multiple of the flat-field: zero mean by convention
    truth = dark - flat * dark.mean()
    assert abs(float(model.darkfield.mean())) < 1.0
    assert _rms(model.darkfield, truth) < 0.1 * _rms(truth, 0)
    assert _rms(model.flatfield / flat, 1) < 0.01
    without = estimate_shading(ts.tiles, darkfield=False)
    assert _rms(without.flatfield / flat, 1) > 0.02  # ignoring the dark-field biases F


def test_save_load_and_correct_from_file(tmp_path, mosaic2d):
    sm, ts = mosaic2d
    corr = ts.estimate_corrections(flatfield=sm.flatfield, offsets=True, reference=5)
    path = corr.save(tmp_path / "corr.npz")
    back = Corrections.load(path)
    np.testing.assert_array_equal(back.gains, corr.gains)
    np.testing.assert_array_equal(back.flatfield, corr.flatfield)
    assert back.tile_names == corr.tile_names and back.info == corr.info
    assert back.digest() == corr.digest()
    a = ts.correct(path).fuse(blend="overwrite")
    b = ts.correct(corr).fuse(blend="overwrite")
    np.testing.assert_array_equal(a, b)
    png = corr.to_png(tmp_path / "qc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrections_are_lazy_and_recorded_in_the_output(tmp_path, mosaic2d):
    sm, ts = mosaic2d
    flat_file = tmp_path / "flat.tif"
    tifffile.imwrite(flat_file, (sm.flatfield * 1000).astype(np.float32))  # any scale: normalised
    cts = ts.correct(flatfield=flat_file, gains=1 / sm.gains, offsets=-sm.tile_offsets / sm.gains)
    # a region read gives the same pixels as the whole tile cut afterwards
    whole = cts[3].read()
    np.testing.assert_array_equal(
        cts[3].read((slice(0, 1), slice(10, 50), slice(20, 90))), whole[:, 10:50, 20:90]
    )
    group = cts.fuse(tmp_path / "out.ome.zarr", blend="linear")
    attrs = json.loads((tmp_path / "out.ome.zarr" / "zarr.json").read_text())
    rec = attrs["attributes"]["tilefuse"]["intensity_correction"]
    assert set(rec["tiles"]) == {t.name for t in ts}
    np.testing.assert_allclose(rec["tiles"][ts[3].name]["gain"], [1 / sm.gains[3]])
    assert _rel(group.read(), sm.volume[0]) < 0.02
    # the uncorrected fusion has another fingerprint: it cannot resume the corrected store
    from tilefuse.fuse import FusionPlan, OutputGrid

    grid = OutputGrid.covering(ts.tiles, ts.voxel_size)
    assert FusionPlan(ts.tiles, grid).fingerprint() != FusionPlan(cts.tiles, grid).fingerprint()


def test_dtype_kept_and_clipping_counted():
    tile = np.full((1, 20, 30), 40000, dtype=np.uint16)
    ts = Tileset.from_arrays([tile, tile], [(0, 0, 0), (0, 0, 25)])
    cts = ts.correct(gains=[1.0, 2.0])
    out = cts[1].read()
    assert out.dtype == np.uint16 and out.max() == 65535
    assert clipped_voxels(cts.tiles) == 600
    assert cts[0].read().max() == 40000


def test_bad_flatfields_are_refused(tmp_path, mosaic2d):
    sm, ts = mosaic2d
    with pytest.raises(CorrectionError, match=r"shape \(10, 10\)"):
        ts.correct(flatfield=np.ones((10, 10)))
    bad = sm.flatfield.copy()
    bad[5, 5] = 0
    path = tmp_path / "zeros.npy"
    np.save(path, bad)
    with pytest.raises(CorrectionError, match=r"zeros\.npy has 1 voxel\(s\) <= 0"):
        ts.correct(flatfield=path)
    bad[5, 5] = np.nan
    with pytest.raises(CorrectionError, match="non-finite"):
        ts.correct(flatfield=bad)
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.ones((7, 9), np.float32))
    with pytest.raises(CorrectionError, match="wrong.tif has shape"):
        ts.estimate_corrections(flatfield=wrong)
    with pytest.raises(CorrectionError, match="not found"):
        ts.correct(flatfield=tmp_path / "absent.npy")
    with pytest.raises(CorrectionError, match="not a corrections"):
        ts.correct(path)  # an .npy is not a corrections file
    other = Corrections(gains=np.ones((16, 1)), tile_names=tuple(f"x{i}" for i in range(16)))
    with pytest.raises(CorrectionError, match="other tiles"):
        ts.correct(other)


def test_seam_metric_of_fused_images(mosaic3d, tmp_path):
    """On a fused image, at the tile edges: steps where tiles with other gains meet (overwrite),
    none in the truth or after correction; the same from an OME-Zarr store."""
    from tilefuse.equalise import fused_seam_metric

    sm, ts = mosaic3d
    raw = ts.fuse(blend="overwrite")
    rep = ts.fused_seam_metric(raw)
    truth = ts.fused_seam_metric(sm.volume).score
    assert rep.score > 1.3 > truth and abs(truth - 1) < 0.1
    assert len(rep.edges) == 48  # 24 neighbour pairs, the edge of each tile facing the other
    assert all(k[1] in ("y-", "y+", "x-", "x+") for k in rep.edges)  # one z layer: no z seams
    corrected = ts.correct(ts.estimate_corrections(offsets=True, reference=5))
    assert abs(corrected.fused_seam_metric(corrected.fuse(blend="overwrite")).score - truth) < 0.05
    # a linear blend spreads the step over its ramp: little is left at d = 1
    assert ts.fused_seam_metric(ts.fuse(blend="linear")).score < rep.score
    path = tmp_path / "raw.ome.zarr"
    ts.fuse(path, blend="overwrite", levels=1)
    assert ts.fused_seam_metric(path).score == pytest.approx(rep.score, rel=1e-6)
    # boxes in voxel boundaries; a z seam between two stacked tiles is measured too
    vol = _volume((40, 30, 30))
    top, bottom = vol[:22], vol[18:] * 1.5
    fused = np.concatenate([top[:18], bottom])  # overwrite: the second tile wins the overlap
    boxes = [[(0, 0, 0), (22, 30, 30)], [(18, 0, 0), (40, 30, 30)]]
    zrep = fused_seam_metric(fused, boxes)
    assert set(zrep.edges) == {(0, "z+"), (1, "z-")}
    assert zrep.edges[(1, "z-")] > 2 > 1.2 > zrep.edges[(0, "z+")]  # the switch is at z = 18
    with pytest.raises(CorrectionError, match="no tile edge"):
        fused_seam_metric(vol, [[(0, 0, 0), (40, 30, 30)]])


def test_shading_needs_one_field_of_view():
    ts = Tileset.from_arrays([np.ones((1, 20, 20)), np.ones((1, 20, 24))], [(0, 0, 0), (0, 0, 18)])
    with pytest.raises(IncompatibleTilesError, match="one \\(y, x\\) field of view"):
        ts.estimate_corrections()


def test_mist_seams_before_after(shared_data):
    """The real NIST grid at MIST's positions: corrections make the seams less visible."""
    import re

    folder = shared_data / "mist-5x5"
    pos = re.compile(r"file: (\S+); corr: \S+; position: \((-?\d+), (-?\d+)\);")
    rows = [
        pos.match(line)
        for line in (folder / "reference" / "global-positions-1.txt").read_text().splitlines()
    ]
    rows = [m for m in rows if m]
    ts = Tileset.from_tiff(
        [folder / m.group(1) for m in rows],
        [(0.0, float(m.group(3)), float(m.group(2))) for m in rows],
    )
    before = ts.seam_metric().score
    assert before < 1.01
    for ramp in ("auto", "gains"):
        corr = ts.estimate_corrections(ramp=ramp)
        # MIST's tiles have no real shading or gain steps (overlaps agree to a fraction of a
        # count): the estimate stays near flat and the seams stay as invisible as they were.
        # "auto" takes part of the sample's 0.5 % top-to-bottom content gradient for an
        # illumination ramp (a world ramp overlaps cannot see), so its gains trend by ~1 %
        assert np.abs(corr.flatfield - 1).max() < 0.02, ramp
        assert np.abs(corr.gains - 1).max() < (0.02 if ramp == "auto" else 0.01), ramp
        assert ts.correct(corr).seam_metric().score < before + 0.005, ramp
        links = corr.info["links"]["0"]
        assert links["kept"] >= 30
        assert set(links["unlinked_tiles"]) == {20, 21}  # two tiles with featureless overlaps


def test_cli_correct_stitch_and_info(tmp_path, capsys):
    from tilefuse.cli import main
    from tilefuse.io.ome_zarr import MultiScaleGroup
    from tilefuse.io.tiff import write_tiff
    from tilefuse.io.tileconfig import write_tileconfig

    sm = shaded_mosaic(_volume((1, 400, 400)), (3, 3), corner=0.4, reference=4, seed=8)
    names = []
    for k, t in enumerate(sm.tiles):
        names.append(f"t{k}.tif")
        write_tiff(tmp_path / names[-1], t)
    write_tileconfig(tmp_path / "TileConfiguration.txt", names, sm.offsets_px)
    flat = tmp_path / "flat.npy"
    np.save(flat, sm.flatfield)
    npz, png = tmp_path / "corr.npz", tmp_path / "qc.png"
    args = [str(tmp_path), "-o", str(npz), "--flatfield", str(flat), "--reference", "4"]
    assert main(["correct", *args, "--qc-png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "seam metric channel 0:" in out and png.is_file()
    corr = Corrections.load(npz)
    np.testing.assert_allclose(corr.gains[:, 0] * sm.gains, 1.0, atol=0.06)  # gain-only model
    assert main(["info", str(tmp_path), "--seams", "--correct", str(npz), "--json"]) == 0
    seams = json.loads(capsys.readouterr().out)["seam_metric"]
    assert seams["channel 0 corrected"] < seams["channel 0"]
    out_zarr = tmp_path / "fused.ome.zarr"
    assert (
        main(
            [
                "stitch",
                str(tmp_path),
                "-o",
                str(out_zarr),
                "--correct",
                str(npz),
                "--no-progress",
                "--levels",
                "1",
            ]
        )
        == 0
    )
    group = MultiScaleGroup.open(out_zarr)
    rec = group.get_attribute("intensity_correction")
    assert len(rec["tiles"]) == 9
    corrected = group.read().astype(float)
    raw = Tileset.open(tmp_path).fuse().astype(float)
    assert _rel(corrected, sm.volume[0]) < _rel(raw, sm.volume[0]) / 2
    auto = tmp_path / "auto.ome.zarr"
    assert (
        main(
            [
                "stitch",
                str(tmp_path),
                "-o",
                str(auto),
                "--correct",
                "auto",
                "--no-progress",
                "--levels",
                "1",
            ]
        )
        == 0
    )
    assert _rel(MultiScaleGroup.open(auto).read(), sm.volume[0]) < _rel(raw, sm.volume[0]) / 2
    # the seam metric of a fused output, measured at the tile edges in the store
    raw_zarr = tmp_path / "raw.ome.zarr"
    stitch = ["stitch", str(tmp_path), "--no-progress", "--levels", "1", "--blend", "overwrite"]
    assert main([*stitch, "-o", str(raw_zarr)]) == 0
    capsys.readouterr()
    for fused, worse in ((raw_zarr, True), (auto, False)):
        assert main(["info", str(tmp_path), "--seams", "--fused", str(fused), "--json"]) == 0
        seams = json.loads(capsys.readouterr().out)["seam_metric"]
        assert (seams[f"channel 0 in {fused}"] > 1.3) is worse, seams
    # export sees corrected pixels too
    h5 = tmp_path / "tiles.h5"
    assert (
        main(["export-bdv", str(tmp_path), "-o", str(h5), "--correct", str(npz), "--no-progress"])
        == 0
    )
    import h5py

    with h5py.File(h5, "r") as f:
        exported = f["t00000/s04/0/cells"][()]  # the reference tile: flat-field only
    want = np.clip(np.rint(sm.tiles[4] / sm.flatfield), 0, 65535)
    # (corrected in float32: a rounding tie may land one count apart)
    np.testing.assert_allclose(exported.astype(float).reshape(want.shape), want, atol=1)
    assert not np.allclose(exported.astype(float).reshape(want.shape), sm.tiles[4], atol=100)
    # bad input: a clear error and exit status 2
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 5)))
    assert (
        main(["correct", str(tmp_path), "-o", str(tmp_path / "x.npz"), "--flatfield", str(bad)])
        == 2
    )
    assert not (tmp_path / "x.npz").exists()
