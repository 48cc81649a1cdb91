"""One geometry everywhere: an affine maps voxel centres (NGFF, BigDataViewer).

Every path that changes or reads a grid is checked against an analytic field
sampled at voxel centres, never against tilefuse's own helpers: tiles hold
``field(affine @ i)``; outputs are read back with zarr / h5py / lxml and must
equal the field at the centres their own metadata declares (NGFF ``scale`` and
``translation``, the BDV affine). The field is linear, so linear interpolation
reproduces it exactly wherever it interpolates: any half-voxel slip shows as an
error of ``gradient * voxel / 2``, far above the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tilefuse import Tile, Tileset

GRAD = np.array([3.0, -2.0, 1.5])  # field gradient per micrometre (z, y, x)
ATOL = 1e-6


def field(world):
    """The analytic field at world points ``(3, ...)`` (micrometres)."""
    w = np.asarray(world, dtype=float)
    return 100.0 + np.tensordot(GRAD, w, axes=(0, 0))


def centres(affine, shape):
    """World centres ``(3, *shape)`` of the voxels of a grid placed by ``affine``."""
    idx = np.indices(shape, dtype=float).reshape(3, -1)
    w = affine[:3, :3] @ idx + affine[:3, 3:4]
    return w.reshape(3, *shape)


def sampled_tile(shape, affine, **kwargs):
    """A float64 tile holding the field at its voxel centres."""
    a = np.asarray(affine, dtype=float)
    return Tile.from_array(field(centres(a, shape)), **kwargs).with_affine(a)


def grid_affine(scale, translation):
    a = np.eye(4)
    a[:3, :3] = np.diag(scale)
    a[:3, 3] = translation
    return a


def ngff_level(path, level=0):
    """``(scale, translation, data)`` of one level, from the store's own NGFF metadata (zarr)."""
    g = zarr.open_group(str(path), mode="r")
    attrs = g.attrs.asdict()
    ms = attrs.get("ome", attrs)["multiscales"][0]
    axes = [a["name"] for a in ms["axes"]]
    ds = ms["datasets"][level]
    ct = {t["type"]: t for t in ds["coordinateTransformations"]}
    sp = [axes.index(a) for a in "zyx"]
    scale = np.array([ct["scale"]["scale"][i] for i in sp])
    trans = np.array([ct["translation"]["translation"][i] for i in sp])
    data = np.asarray(g[ds["path"]])
    return scale, trans, data.reshape(data.shape[-3:])


def exact_mask(tiles, affine, shape):
    """Output voxels whose centre every covering tile interpolates (no edge clamping).

    A tile covers its box ``[-1/2, n - 1/2)`` in its own voxel indices; inside
    ``[0, n - 1]`` it interpolates, in the half-voxel margins it repeats its edge.
    Returns ``(exact, covered)`` boolean arrays.
    """
    w = centres(affine, shape).reshape(3, -1)
    covered = np.zeros(w.shape[1], bool)
    clamped = np.zeros(w.shape[1], bool)
    for t in tiles:
        inv = np.linalg.inv(t.affine)
        idx = inv[:3, :3] @ w + inv[:3, 3:4]
        n = np.array(t.shape, float)[:, None]
        tol = 1e-9
        inside = np.all((idx >= -0.5 - tol) & (idx < n - 0.5 - tol), axis=0)
        interp = np.all((idx >= -tol) & (idx <= n - 1 + tol), axis=0)
        covered |= inside
        clamped |= inside & ~interp
    return (covered & ~clamped).reshape(shape), covered.reshape(shape)


def check_level(path, level, tiles, *, min_exact=0.5):
    scale, trans, data = ngff_level(path, level)
    aff = grid_affine(scale, trans)
    want = field(centres(aff, data.shape))
    exact, covered = exact_mask(tiles, aff, data.shape)
    assert exact.mean() >= min_exact
    np.testing.assert_allclose(data[exact], want[exact], atol=ATOL)
    # clamped margins (half a voxel beyond a tile's last centre) are off by at most that
    half = np.abs(GRAD) @ np.array([t.voxel_size for t in tiles]).max(axis=0) / 2
    assert np.all(np.abs(data[covered] - want[covered]) <= half + ATOL)
    return scale, trans, data


def mosaic(frac, vs, shape=(6, 20, 24), step=(16, 18)):
    """2 x 2 tiles of the field at offsets k * step + frac voxels."""
    vs = np.asarray(vs, float)
    tiles = []
    for r in range(2):
        for c in range(2):
            off = (np.array([0, r * step[0], c * step[1]]) + np.asarray(frac)) * vs
            tiles.append(sampled_tile(shape, grid_affine(vs, off), name=f"t{r}{c}"))
    return Tileset(tiles)


FRACS = [(0.0, 0.0, 0.0), (0.0, 0.25, 0.5), (0.3, 0.5, 0.75)]
VOXELS = [(1.0, 1.0, 1.0), (0.4, 0.17, 0.17)]


@pytest.mark.parametrize("frac", FRACS)
@pytest.mark.parametrize("vs", VOXELS)
@pytest.mark.parametrize("blend", ["linear", "overwrite", "mean"])
def test_fused_store_equals_the_field_at_its_declared_centres(tmp_path, frac, vs, blend):
    ts = mosaic(frac, vs)
    out = tmp_path / "f.ome.zarr"
    ts.fuse(out, blend=blend, levels=3, chunks=(4, 16, 16))
    scale, trans, _ = check_level(out, 0, ts.tiles)
    np.testing.assert_allclose(scale, vs)
    # the output grid keeps the tiles' voxel centres: voxel 0 at the first tile's centre 0
    np.testing.assert_allclose(trans, ts[0].offset)
    if frac == (0.0, 0.0, 0.0):  # every level-0 voxel exact: the pyramid levels are too
        for level in (1, 2):
            s, t, data = ngff_level(out, level)
            s0, _, full = ngff_level(out, 0)
            f = np.rint(s / s0).astype(int)
            # complete windows only (a partial edge window averages fewer voxels)
            n = np.array(full.shape) // f
            want = field(centres(grid_affine(s, t), data.shape))
            sl = tuple(slice(0, k) for k in n)
            np.testing.assert_allclose(data[sl], want[sl], atol=ATOL)


@pytest.mark.parametrize("method", ["mean", "stride"])
@pytest.mark.parametrize("vs", VOXELS)
def test_downscaled_tiles_fuse_onto_their_declared_centres(tmp_path, method, vs):
    ts = mosaic((0.0, 0.0, 0.0), vs, shape=(6, 20, 24), step=(16, 18))
    small = ts.downscale((1, 2, 2), method=method)
    out = tmp_path / "small.ome.zarr"
    small.fuse(out, blend="linear")
    scale, trans, data = ngff_level(out, 0)
    np.testing.assert_allclose(scale, np.asarray(vs) * [1, 2, 2])
    aff = grid_affine(scale, trans)
    want = field(centres(aff, data.shape))
    # the downscaled tiles are the field at their own (declared) centres: a mean of 2 x 2
    # voxels sits at the mean of their centres, a stride keeps the kept voxel's centre
    for t in small:
        np.testing.assert_allclose(t.read(), field(centres(t.affine, t.shape)), atol=ATOL)
    exact, _ = exact_mask(small.tiles, aff, data.shape)
    assert exact.mean() > 0.5
    np.testing.assert_allclose(data[exact], want[exact], atol=ATOL)


@pytest.mark.parametrize("frac", FRACS)
@pytest.mark.parametrize("ratio", [(1.0, 2.0, 2.0), (1.0, 1.6, 0.7), (0.5, 0.5, 0.5)])
def test_fuse_at_another_voxel_size(tmp_path, frac, ratio):
    vs = np.array([0.4, 0.17, 0.17])
    ts = mosaic(frac, vs)
    out = tmp_path / "v.ome.zarr"
    ts.fuse(out, voxel_size=vs * ratio, blend="linear", chunks=(4, 16, 16))
    scale, _, _ = check_level(out, 0, ts.tiles, min_exact=0.4)
    np.testing.assert_allclose(scale, vs * ratio)


def rotation_z(degrees):
    t = np.deg2rad(degrees)
    r = np.eye(4)
    r[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


@pytest.mark.parametrize("degrees", [90, 30])
@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (0.3, 2.25, -1.5)])
def test_rotated_tile_is_sampled_at_output_centres(tmp_path, degrees, offset):
    vs = np.array([1.0, 0.5, 0.5])
    a = rotation_z(degrees) @ grid_affine(vs, (0, 0, 0))
    a[:3, 3] = offset
    tile = sampled_tile((4, 18, 22), a)
    ts = Tileset([tile], vs)
    out = tmp_path / "rot.ome.zarr"
    ts.fuse(out, blend="overwrite")
    _, _, data = check_level(out, 0, [tile], min_exact=0.3)
    if degrees == 90 and offset == (0.0, 0.0, 0.0):
        # a quarter turn at the tile's own voxel size: every tile voxel lands on one output
        # voxel, the first and last rows and columns included
        assert data.shape == (4, 22, 18)
        np.testing.assert_allclose(np.sort(data.ravel()), np.sort(tile.read().ravel()))


@pytest.mark.parametrize("method", ["mean", "mode", "nearest"])
def test_pyramid_level_translation_follows_the_method(tmp_path, method):
    from tilefuse.io.ome_zarr import MultiScaleGroup

    vs, org = np.array([0.5, 0.2, 0.3]), np.array([1.0, -2.0, 0.7])
    shape = (8, 24, 32)  # whole windows at every level (a partial edge window has fewer voxels)
    kind = "label" if method == "mode" else "image"
    if kind == "label":  # a label field: constant on 2-voxel slabs along x, so the mode is exact
        data = (np.indices(shape)[2] // 2 + 1).astype(np.uint32)
    else:
        data = field(centres(grid_affine(vs, org), shape))
    g = MultiScaleGroup.create(
        tmp_path / "p.ome.zarr", shape=shape, dtype=data.dtype, voxel_size=vs, origin=org, kind=kind
    )
    g.write_array(data)
    g.add_downsample_level(method=method, factors=(2, 2, 2))
    g.add_downsample_level(method=method, factors=(1, 2, 2))
    g.mark_complete()
    for level, f in ((1, np.array([2, 2, 2])), (2, np.array([2, 4, 4]))):
        s, t, lvl = ngff_level(g.path, level)
        np.testing.assert_allclose(s, vs * f)
        if method == "nearest":  # keeps voxel 0 of each window, and its centre
            np.testing.assert_allclose(t, org)
        else:  # the mean of the merged voxels' centres
            np.testing.assert_allclose(t, org + (f - 1) / 2 * vs)
        if kind == "image":
            np.testing.assert_allclose(lvl, field(centres(grid_affine(s, t), lvl.shape)), atol=ATOL)
        elif level == 1:  # x voxel k of level 1 merges level-0 x 2k, 2k + 1: one slab, label k + 1
            np.testing.assert_array_equal(lvl, np.indices(lvl.shape)[2] + 1)


@pytest.mark.parametrize("route", ["store", "fused"])
def test_bdv_export_declares_the_centres_of_its_voxels(tmp_path, route):
    import h5py
    from lxml import etree

    ts = mosaic((0.0, 0.25, 0.5), (0.4, 0.17, 0.17))
    if route == "store":  # an OME-Zarr store exported to BDV
        group = ts.fuse(tmp_path / "f.ome.zarr", blend="linear")
        h5, xml = group.to_bdv(tmp_path / "f.h5")
    else:  # fused straight into BDV-HDF5
        h5, xml = ts.to_bdv(tmp_path / "f.h5", fused=True, blend="linear")
    root = etree.parse(str(xml)).getroot()
    vals = [float(v) for v in root.find(".//ViewRegistration/ViewTransform/affine").text.split()]
    m = np.array(vals).reshape(3, 4)  # XYZ rows and columns
    aff = np.eye(4)
    aff[:3, :3] = m[::-1, :3][:, ::-1]
    aff[:3, 3] = m[::-1, 3]
    with h5py.File(h5, "r") as f:
        data = np.asarray(f["t00000/s00/0/cells"]).astype(float)
        res = np.asarray(f["s00/resolutions"])[:, ::-1]  # (levels, zyx)
        lvl1 = np.asarray(f["t00000/s00/1/cells"]).astype(float) if len(res) > 1 else None
    want = field(centres(aff, data.shape))
    exact, _ = exact_mask(ts.tiles, aff, data.shape)
    # BDV stores the float field in its own dtype (float32 here, or ints rounded): tolerance
    np.testing.assert_allclose(data[exact], want[exact], atol=1e-3)
    if lvl1 is not None:  # BDV mipmaps: level voxel i is centred at r * i + (r - 1) / 2
        r = res[1]
        mip = np.eye(4)
        mip[:3, :3] = np.diag(r)
        mip[:3, 3] = (r - 1) / 2
        a1 = aff @ mip
        n = np.array(data.shape) // r.astype(int)
        sl = tuple(slice(0, int(k)) for k in n)
        ex1 = exact_mask(ts.tiles, a1, lvl1.shape)[0][sl]
        w1 = field(centres(a1, lvl1.shape))[sl]
        np.testing.assert_allclose(lvl1[sl][ex1], w1[ex1], atol=1e-3)


def test_tiles_to_bdv_write_the_voxel_centre_affines(tmp_path):
    import h5py
    from lxml import etree

    ts = mosaic((0.3, 0.5, 0.75), (0.4, 0.17, 0.17))
    h5, xml = ts.to_bdv(tmp_path / "tiles.h5")
    root = etree.parse(str(xml)).getroot()
    with h5py.File(h5, "r") as f:
        for reg in root.iter("ViewRegistration"):
            setup = int(reg.get("setup"))
            m = np.eye(4)
            for vt in reg.iter("ViewTransform"):  # composed: the first listed is applied last
                t = np.eye(4)
                t[:3] = np.array([float(v) for v in vt.find("affine").text.split()]).reshape(3, 4)
                m = m @ t
            aff = np.eye(4)
            aff[:3, :3] = m[:3, :3][::-1, ::-1]
            aff[:3, 3] = m[:3, 3][::-1]
            data = np.asarray(f[f"t00000/s{setup:02d}/0/cells"]).astype(float)
            np.testing.assert_allclose(data, field(centres(aff, data.shape)), atol=1e-3)


def test_one_voxel_object_centroid_is_its_voxel_centre(tmp_path):
    from tilefuse.io.ome_zarr import MultiScaleGroup
    from tilefuse.objects import object_table

    vs, org = np.array([0.4, 0.17, 0.25]), np.array([3.0, -1.0, 2.0])
    lab = np.zeros((5, 12, 14), np.uint32)
    pts = {7: (0, 0, 0), 9: (2, 5, 13), 11: (4, 11, 6)}
    for k, p in pts.items():
        lab[p] = k
    g = MultiScaleGroup.create(
        tmp_path / "l.ome.zarr",
        shape=lab.shape,
        dtype=np.uint32,
        voxel_size=vs,
        origin=org,
        kind="label",
    )
    g.write_array(lab)
    g.mark_complete()
    scale, trans, _ = ngff_level(g.path, 0)
    table = object_table(MultiScaleGroup.open(g.path))
    for row, (k, p) in enumerate(sorted(pts.items())):
        assert table.label[row] == k
        np.testing.assert_allclose(table.centroid[row], trans + np.array(p) * scale)
        np.testing.assert_allclose(table.bbox_lo[row], table.centroid[row] - scale / 2)
        np.testing.assert_allclose(table.bbox_hi[row], table.centroid[row] + scale / 2)
    # per label tile: the same, through the tile's placement, and local_to_global agrees
    tile = Tile.from_array(lab, offset=org, voxel_size=vs)
    per_tile = Tileset([tile]).centroids()[0]
    want = np.array([org + np.array(p) * vs for _, p in sorted(pts.items())])
    np.testing.assert_allclose(per_tile.centroid, want)
    pts_local = np.array([(0, *p) for _, p in sorted(pts.items())], float)
    np.testing.assert_allclose(Tileset([tile]).local_to_global(pts_local), want)


def test_surface_heights_are_plane_centres():
    from tilefuse.surfaces import tile_surfaces

    data = np.zeros((10, 4, 5), np.uint16)
    data[3:7, :, :2] = 100  # tissue from plane 3 to plane 6 in the first two columns
    tile = Tile.from_array(data, offset=(2.0, 0.0, 0.0), voxel_size=(0.5, 1.0, 1.0))
    s = tile_surfaces(tile, threshold=50)
    top, bottom = s.world_z(tile, "top"), s.world_z(tile, "bottom")
    # plane k is centred at z = 2.0 + 0.5 k (the tile's affine maps voxel centres)
    np.testing.assert_allclose(top[:, :2], 2.0 + 0.5 * 3)
    np.testing.assert_allclose(bottom[:, :2], 2.0 + 0.5 * 6)
    assert np.isnan(top[:, 2:]).all()
