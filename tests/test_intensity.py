"""Intensity range, lazy scaling, previews, surfaces and small utilities, against ground truth."""

import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.intensity import show_slice, to_png
from tilefuse.surfaces import tile_surfaces
from tilefuse.synthetic import cut_tiles, make_volume


def mosaic(shape=(12, 160, 180), seed=1, grid=(2, 2), vs=(0.5, 0.2, 0.2)):
    vol, labels = make_volume(shape, seed=seed)
    m = cut_tiles(vol, grid, overlap=0.25)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px * vs, voxel_size=vs)
    return vol, labels, m, ts


def test_intensity_range_estimates_global_percentiles():
    # tiles with very different brightness: the global percentile is not the mean of per-tile ones
    rng = np.random.default_rng(0)
    tiles = [rng.gamma(2.0, 100 * (k + 1), (20, 60, 60)).astype(np.uint16) for k in range(4)]
    ts = Tileset.from_arrays(tiles, [(0, 0, 0), (0, 0, 50), (0, 50, 0), (0, 50, 50)])
    exact = np.percentile(np.concatenate([t.ravel() for t in tiles]), [1, 99.9])
    est = ts.intensity_range((1, 99.9), max_samples=200_000, planes_per_tile=8)
    assert est.shape == (1, 2)
    np.testing.assert_allclose(est[0], exact, rtol=0.05)
    per_tile_mean = np.mean([np.percentile(t, 99.9) for t in tiles])
    assert abs(est[0, 1] - exact[1]) < abs(per_tile_mean - exact[1]) / 4
    assert np.array_equal(
        est, ts.intensity_range((1, 99.9), max_samples=200_000, planes_per_tile=8)
    )


def test_scale_intensity_is_lazy_and_leaves_the_source():
    _, _, m, ts = mosaic()
    scaled = ts.scale_intensity(1000, 30000)
    assert scaled.dtype == np.uint8
    got = scaled[0].read()
    want = np.rint(np.clip((m.tiles[0].astype(np.float32) - 1000) / 29000, 0, 1) * 255)
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    np.testing.assert_array_equal(ts[0].read(), m.tiles[0])  # source untouched
    auto = ts.scale_intensity()
    assert auto[1].read().max() == 255 and auto[1].read().min() == 0
    with pytest.raises(ValueError, match="high > low"):
        ts.scale_intensity(5, 5)


@pytest.mark.parametrize("z_um", [-0.2, 0.0, 2.6, 2.76, 5.7])
def test_preview_equals_the_fused_slice(z_um):
    _, _, _, ts = mosaic()
    prev = ts.preview(z=z_um, downsample=4)
    fused = ts.downscale((1, 4, 4), method="stride").fuse(blend="overwrite")
    k = int(np.floor(z_um / 0.5 + 0.5))  # plane k is centred at 0.5 k um, half a plane each side
    np.testing.assert_array_equal(prev, fused[k])
    mip = ts.preview(projection="max", downsample=4)
    np.testing.assert_array_equal(mip, fused.max(axis=0))
    with pytest.raises(ValueError, match="outside the tileset"):
        ts.preview(z=100.0)


def test_preview_reads_only_the_planes_it_needs():
    from conftest import CountingSource
    from tilefuse import Tile
    from tilefuse.geometry import affine_from_offset

    vol, _ = make_volume((20, 80, 90), seed=2)
    m = cut_tiles(vol, (1, 2), overlap=0.3)
    srcs = [CountingSource(t) for t in m.tiles]
    ts = Tileset(
        [Tile(s, affine_from_offset((1, 1, 1), o)) for s, o in zip(srcs, m.offsets_px, strict=True)]
    )
    ts.preview(z=7.2, downsample=2)  # plane 7 covers z in [6.5, 7.5)
    for s in srcs:
        assert {(r[0].start, r[0].stop) for r in s.regions} == {(7, 8)}


def test_png_and_show_slice(tmp_path):
    import imagecodecs

    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    path = to_png(img, tmp_path / "p.png")
    back = imagecodecs.png_decode(path.read_bytes())
    assert back.shape == (100, 120) and back.dtype == np.uint8 and back.max() == 255
    import matplotlib

    matplotlib.use("Agg")
    ax = show_slice(img, title="x")
    assert ax.get_title() == "x"


def test_surfaces_find_a_known_tissue_top_within_one_plane():
    nz, ny, nx = 40, 50, 60
    yy, xx = np.mgrid[0:ny, 0:nx]
    top_true = 8 + 6 * np.sin(yy / 9.0) * np.cos(xx / 11.0) + xx / 20  # planes
    zz = np.arange(nz)[:, None, None]
    rng = np.random.default_rng(3)
    tissue = (zz >= top_true) & (zz <= top_true + 20)
    data = np.where(tissue, 1000, 100) + rng.integers(0, 50, (nz, ny, nx))
    data[:, :5, :5] = 100  # a patch with no tissue
    ts = Tileset.from_arrays([data.astype(np.uint16)], [(2.0, 0, 0)], voxel_size=(0.5, 1, 1))
    s = ts.surfaces(500, block_rows=7)[0]
    ok = ~np.isnan(s.top)
    assert np.isnan(s.top[:5, :5]).all() and ok.sum() == ny * nx - 25
    assert np.abs(s.top[ok] - np.ceil(top_true[ok])).max() <= 1
    assert np.abs(s.bottom[ok] - np.floor(top_true[ok] + 20)).max() <= 1
    np.testing.assert_array_equal(s.contact, s.bottom)
    np.testing.assert_allclose(s.world_z(ts[0])[ok], 2.0 + s.top[ok] * 0.5)
    assert np.array_equal(tile_surfaces(ts[0], 500, coverslip="top").contact, s.top, equal_nan=True)


def test_centroids_and_scale_offsets():
    from scipy import ndimage

    _, labels, _, _ = mosaic(shape=(10, 120, 140), seed=4)
    m_lab = cut_tiles(labels, (2, 2), overlap=0.25)
    vs = np.array([0.5, 0.2, 0.2])
    lts = Tileset.from_arrays(m_lab.tiles, m_lab.offsets_px * vs, voxel_size=vs)
    cents = lts.centroids()
    t = 3
    ids = np.unique(m_lab.tiles[t][m_lab.tiles[t] > 0])
    com = np.array(ndimage.center_of_mass(np.ones_like(m_lab.tiles[t]), m_lab.tiles[t], ids))
    np.testing.assert_allclose(cents[t].centroid, lts[t].offset + com * vs)
    np.testing.assert_allclose(lts.scale_offsets((1, 2, 2)).offsets, lts.offsets * [1, 2, 2])
