"""Labels are never interpolated; label and image grids are checked, never assumed.

Expected placements are computed here from the affines alone (world centre of
each output voxel -> tile index -> the tile voxel whose extent holds it), not
with tilefuse's helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tilefuse import Tile, Tileset
from tilefuse.errors import GridMismatchError


def store_grid(path):
    """(scale, translation, data) of level 0 from the store's own NGFF metadata."""
    g = zarr.open_group(str(path), mode="r")
    attrs = g.attrs.asdict()
    ms = attrs.get("ome", attrs)["multiscales"][0]
    axes = [a["name"] for a in ms["axes"]]
    ct = {t["type"]: t for t in ms["datasets"][0]["coordinateTransformations"]}
    sp = [axes.index(a) for a in "zyx"]
    data = np.asarray(g[ms["datasets"][0]["path"]])
    return (
        np.array([ct["scale"]["scale"][i] for i in sp]),
        np.array([ct["translation"]["translation"][i] for i in sp]),
        data.reshape(data.shape[-3:]),
    )


def rot_z(deg, vs, offset):
    t = np.deg2rad(deg)
    r = np.eye(4)
    r[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    s = np.eye(4)
    s[:3, :3] = np.diag(vs)
    a = r @ s
    a[:3, 3] = offset
    return a


def striped(shape, ids):
    """A label tile of vertical stripes (2 voxels wide in x) cycling through ``ids``."""
    x = np.indices(shape)[2] // 2
    return np.asarray(ids, np.uint32)[x % len(ids)]


def expected_single(tile, scale, trans, shape):
    """Nearest-voxel placement of one tile on a grid, from the affines alone."""
    idx = np.indices(shape, dtype=float).reshape(3, -1)
    world = scale[:, None] * idx + trans[:, None]
    inv = np.linalg.inv(tile.affine)
    t = inv[:3, :3] @ world + inv[:3, 3:4]
    near = np.floor(t + 0.5 + 1e-9).astype(int)
    n = np.array(tile.shape)[:, None]
    ok = np.all((near >= 0) & (near < n), axis=0)
    data = tile.read()
    out = np.zeros(idx.shape[1], data.dtype)
    out[ok] = data[tuple(near[:, ok])]
    return out.reshape(shape)


CASES = {
    "x+12.5": [np.eye(4), rot_z(0, (1, 1, 1), (0, 0, 12.5))],
    "fractional": [rot_z(0, (1, 1, 1), (0.3, 0.25, 0.0)), rot_z(0, (1, 1, 1), (0.0, 7.75, 12.5))],
    "rot30": [np.eye(4), rot_z(30, (1, 1, 1), (0, -3.3, 9.6))],
    "rot90": [np.eye(4), rot_z(90, (1, 1, 1), (0, 2.5, 30.0))],
    "other_voxels": [
        rot_z(0, (1.0, 0.5, 0.5), (0, 0, 0)),
        rot_z(0, (1.0, 0.5, 0.5), (0, 0.25, 7.75)),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rule", ["centre", "overwrite"])
def test_fused_label_ids_are_a_subset_of_the_inputs(tmp_path, case, rule):
    a0, a1 = CASES[case]
    t0 = Tile.from_array(striped((3, 16, 20), [20, 21])).with_affine(a0)
    t1 = Tile.from_array(striped((3, 16, 20), [30, 31])).with_affine(a1)
    ts = Tileset([t0, t1], t0.voxel_size)
    out = tmp_path / "labels.ome.zarr"
    ts.fuse_labels(out, rule=rule)
    scale, trans, data = store_grid(out)
    assert set(np.unique(data)) <= {0, 20, 21, 30, 31}
    assert {20, 21, 30, 31} <= set(np.unique(data))
    # where only one tile covers a voxel, it holds that tile's nearest voxel (placement check)
    e0 = expected_single(t0, scale, trans, data.shape)
    e1 = expected_single(t1, scale, trans, data.shape)
    only0, only1 = (e0 > 0) & (e1 == 0), (e1 > 0) & (e0 == 0)
    np.testing.assert_array_equal(data[only0], e0[only0])
    np.testing.assert_array_equal(data[only1], e1[only1])
    both = (e0 > 0) & (e1 > 0)
    assert np.all((data[both] == e0[both]) | (data[both] == e1[both]))


def test_the_issue_example_20_30_at_x_offset_12_5():
    t0 = Tile.from_array(np.full((2, 6, 20), 20, np.uint32))
    t1 = Tile.from_array(np.full((2, 6, 20), 30, np.uint32), offset=(0, 0, 12.5))
    for rule in ("overwrite", "centre"):
        out = Tileset([t0, t1]).fuse_labels(rule=rule)
        assert set(np.unique(out)) == {20, 30}


def _image_store(tmp_path, vs, shape=(4, 16, 40)):
    t0 = Tile.from_array(np.ones(shape, np.uint16), voxel_size=vs)
    t1 = Tile.from_array(np.ones(shape, np.uint16), voxel_size=vs, offset=(0, 0, 30 * vs[2]))
    path = tmp_path / "image.ome.zarr"
    Tileset([t0, t1]).fuse(path)
    return path


def _label_tiles(vs, shape=(4, 16, 40)):
    t0 = Tile.from_array(striped(shape, [1, 2]), voxel_size=vs, name="a")
    t1 = Tile.from_array(
        striped(shape, [11, 12]),
        voxel_size=vs,
        offset=(0, 0, 30 * vs[2]),
        name="b",
    )
    return Tileset([t0, t1])


def test_labels_into_an_image_of_another_grid_are_refused_or_resampled(tmp_path):
    image = _image_store(tmp_path, (0.4, 0.17, 0.17))
    labels = _label_tiles((1.0, 1.0, 1.0))
    with pytest.raises(GridMismatchError) as e:
        labels.fuse_labels(image, name="cells")
    msg = str(e.value)
    assert "0.17" in msg and "resample" in msg and str(image) in msg
    group = labels.fuse_labels(image, name="cells2", resample="nearest")
    data = np.asarray(group[0]).reshape(group[0].shape[-3:])
    assert set(np.unique(data)) <= {0, 1, 2, 11, 12}
    # and on the image's grid, as its metadata says
    scale, trans, _ = store_grid(image / "labels" / "cells2")
    iscale, itrans, _ = store_grid(image)
    np.testing.assert_allclose(scale, iscale)
    np.testing.assert_allclose(trans, itrans)


def test_labels_into_an_image_of_the_same_grid(tmp_path):
    vs = (0.4, 0.17, 0.17)
    image = _image_store(tmp_path, vs)
    labels = _label_tiles(vs)
    group = labels.fuse_labels(image, name="cells")
    data = np.asarray(group[0]).reshape(group[0].shape[-3:])
    np.testing.assert_array_equal(data, np.asarray(labels.fuse_labels()))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("blend", ["overwrite", "max", "centre"])
def test_64_bit_integers_stay_exact(dtype, blend):
    big = 2**53 + 1  # not representable in float64
    a = np.full((2, 6, 10), big, dtype)
    b = np.full((2, 6, 10), big - 1, dtype)
    b[:, :, 6:] = big + 2
    ts = Tileset([Tile.from_array(a), Tile.from_array(b, offset=(0, 0, 5))])
    out = ts.fuse(blend=blend)
    assert out.dtype == dtype
    assert set(np.unique(out).tolist()) <= {big, big - 1, big + 2}
    assert int(out[0, 0, 0]) == big and int(out[0, 0, -1]) == big + 2
    if blend == "max":
        assert int(out[0, 0, 7]) == big  # max(2**53 + 1, 2**53) in the overlap
    # nearest sampling at a fractional offset copies values too
    from tilefuse.options import FusionOptions

    ts2 = Tileset([Tile.from_array(a), Tile.from_array(b, offset=(0, 0, 5.5))])
    out2 = ts2.fuse(options=FusionOptions(blend=blend, interpolation="nearest"))
    assert set(np.unique(out2).tolist()) <= {big, big - 1, big + 2}


def test_dedup_and_fusion_agree_at_half_voxel_offsets():
    """Label tiles sampled (nearest) from one truth at offsets k + 1/2: linked = placed."""
    from tilefuse.synthetic import make_volume

    # few blobs, so no two touch: a one-voxel seam offset cannot merge neighbours
    _, truth = make_volume((10, 90, 100), seed=7, blob_radius=4, n_blobs=15)
    from scipy import ndimage

    for k in np.unique(truth[truth > 0]):
        ring = ndimage.binary_dilation(truth == k, iterations=2) & (truth > 0) & (truth != k)
        assert not ring.any()  # the premise: objects are apart
    tiles, offs = [], []
    for r, c in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        o = np.array([0.0, r * 38.5, c * 43.5])
        idx = np.indices((10, 52, 56)).astype(float) + o.reshape(3, 1, 1, 1)
        near = np.floor(idx + 0.5).astype(int)  # truth voxel whose extent holds the centre
        near = np.minimum(near, np.array(truth.shape).reshape(3, 1, 1, 1) - 1)
        tiles.append(truth[tuple(near)])
        offs.append(o)
    ts = Tileset.from_arrays(tiles, offs)
    mapping = ts.dedup_labels()
    assert len(mapping.merges) > 0  # objects do cross the half-voxel seams
    fused = np.asarray(ts.fuse_labels(mapping=mapping, rule="centre"))
    ids = np.unique(fused[fused > 0])
    # every object was linked across the half-voxel seams: one global ID per truth object
    present = np.unique(np.concatenate([np.unique(t[t > 0]) for t in tiles]))
    assert mapping.n_objects == len(present)
    assert set(ids.tolist()) <= set(range(1, mapping.n_objects + 1))
    assert len(ids) == len(present)
