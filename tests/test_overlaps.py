import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.synthetic import cut_tiles, make_volume


def brute_overlaps(ts):
    out = {}
    for i in range(len(ts)):
        for j in range(i + 1, len(ts)):
            (lo1, hi1), (lo2, hi2) = ts[i].box, ts[j].box
            lo, hi = np.maximum(lo1, lo2), np.minimum(hi1, hi2)
            if np.all(lo < hi):
                out[(i, j)] = (lo, hi)
    return out


def test_overlaps_match_brute_force_mixed_tiles():
    rng = np.random.default_rng(4)
    arrays = [
        np.zeros((rng.integers(1, 5), rng.integers(5, 30), rng.integers(5, 40))) for _ in range(60)
    ]
    # make them all 3D (z >= 2) so the tileset is consistent
    arrays = [np.zeros((max(a.shape[0], 2), *a.shape[1:])) for a in arrays]
    offs = rng.uniform(0, 80, (60, 3)) * [0.1, 1, 1]
    ts = Tileset.from_arrays(arrays, offs, voxel_size=(2.0, 0.3, 0.3))
    got = {(o.i, o.j): (o.lo, o.hi) for o in ts.overlaps()}
    want = brute_overlaps(ts)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k][0], want[k][0])
        np.testing.assert_allclose(got[k][1], want[k][1])


@pytest.mark.parametrize("zdim", [1, 9])
def test_overlap_slices_select_the_same_voxels(zdim):
    vol, _ = make_volume((zdim, 140, 170), seed=3)
    m = cut_tiles(vol, (3, 4), overlap=0.2)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px * [1, 0.5, 0.5], voxel_size=(1, 0.5, 0.5))
    ovs = ts.overlaps()
    # 3x4 grid: 17 edge neighbours + 12 diagonals
    assert len(ovs) == 3 * 3 + 4 * 2 + 2 * 2 * 3
    for o in ovs:
        a = ts[o.i].read(o.slices_i)
        b = ts[o.j].read(o.slices_j)
        assert a.shape == b.shape and a.size > 0
        np.testing.assert_array_equal(a, b)
        # the world box of the slices is the overlap box
        # (the first voxel's centre is half a voxel inside the box)
        lo_i = ts[o.i].offset + np.array([s.start for s in o.slices_i]) * ts.voxel_size
        np.testing.assert_allclose(lo_i - ts.voxel_size / 2, o.lo)


def test_fractional_and_nonsquare():
    ts = Tileset.from_arrays(
        [np.zeros((3, 10, 30)), np.zeros((3, 25, 8))], [(0, 0, 0), (0, 9.5, 27.25)]
    )
    (o,) = ts.overlaps()
    # boxes span half a voxel beyond the first and last voxel centres
    np.testing.assert_allclose(o.lo, [-0.5, 9.0, 26.75])
    np.testing.assert_allclose(o.hi, [2.5, 9.5, 29.5])
    assert o.slices_i == (slice(0, 3), slice(9, 10), slice(27, 30))
    assert o.slices_j == (slice(0, 3), slice(0, 1), slice(0, 3))
    assert o.volume == pytest.approx(3 * 0.5 * 2.75)


def test_rotated_tile_overlap_slices_cover_the_box():
    from tilefuse import Tile
    from tilefuse.geometry import voxel_slices

    a = np.eye(4)
    a[1:3, 1:3] = [[0.8, -0.6], [0.6, 0.8]]  # 36.87 degrees about z
    t1 = Tile.from_array(np.zeros((2, 30, 30)))
    t2 = Tile.from_array(np.zeros((2, 30, 30))).with_affine(a)
    (o,) = Tileset([t1, t2]).overlaps()
    assert o.slices_i == voxel_slices(t1.affine, t1.shape, o.lo, o.hi)
    assert o.slices_j == voxel_slices(t2.affine, t2.shape, o.lo, o.hi)
    # every corner of the overlap box, clipped to tile 2, lies inside tile 2's slices
    inv = np.linalg.inv(a)
    for corner in (
        np.array(np.meshgrid(*zip(o.lo, o.hi, strict=True), indexing="ij")).reshape(3, -1).T
    ):
        idx = np.clip(inv[:3, :3] @ corner + inv[:3, 3], 0, t2.shape)
        for ax, s in enumerate(o.slices_j):
            assert s.start - 1e-9 <= idx[ax] <= s.stop + 1e-9
