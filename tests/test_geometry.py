import numpy as np
import pytest

from tilefuse.geometry import affine_from_offset, box_of, overlapping_pairs, voxel_slices


def brute_pairs(lo, hi):
    out = set()
    for i in range(len(lo)):
        for j in range(i + 1, len(lo)):
            if np.all(np.maximum(lo[i], lo[j]) < np.minimum(hi[i], hi[j])):
                out.add((i, j))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_sweep_matches_brute_force_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    n = 300
    lo = rng.uniform(0, 100, (n, 3))
    hi = lo + rng.uniform(0.5, 15, (n, 3))
    hi[: n // 3, 0] = lo[: n // 3, 0] + 1  # some flat (2D-like) boxes
    got = {tuple(p) for p in overlapping_pairs(lo, hi, max_cells=8)}
    assert got == brute_pairs(lo, hi)


def test_sweep_touching_boxes_do_not_overlap():
    lo = np.array([[0, 0, 0], [0, 0, 10.0]])
    hi = np.array([[1, 10, 10], [1, 10, 20.0]])
    assert len(overlapping_pairs(lo, hi)) == 0
    hi[0, 2] = 10.5
    assert overlapping_pairs(lo, hi).tolist() == [[0, 1]]


def test_sweep_regular_grid_counts():
    # 30 x 40 grid with overlap in y and x: 4-neighbours + diagonals
    rows, cols = 30, 40
    lo = np.array([(0, r * 90.0, c * 90.0) for r in range(rows) for c in range(cols)])
    hi = lo + np.array([10, 100, 100])
    pairs = overlapping_pairs(lo, hi)
    expected = rows * (cols - 1) + cols * (rows - 1) + 2 * (rows - 1) * (cols - 1)
    assert len(pairs) == expected
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len({tuple(p) for p in pairs}) == len(pairs)


def test_box_of_and_voxel_slices_fractional():
    # the affine maps voxel centres: the box is half a voxel beyond the first/last centre
    a = affine_from_offset((2.0, 0.5, 0.5), (10.0, 3.25, -1.0))
    lo, hi = box_of(a, (4, 10, 20))
    np.testing.assert_allclose(lo, [9, 3.0, -1.25])
    np.testing.assert_allclose(hi, [17, 8.0, 8.75])
    # world y [4.0, 6.0) is index 1.5 .. 5.5; voxel i covers [i - 1/2, i + 1/2) -> 2..5
    # world z [10, 14) is index 0 .. 2 -> voxels 0..2; world x from 0 is index 2 -> voxel 2 on
    sl = voxel_slices(a, (4, 10, 20), np.array([10, 4.0, 0]), np.array([14, 6.0, 100]))
    assert sl == (slice(0, 3), slice(2, 6), slice(2, 20))


def test_voxel_slices_rotated_tile_covers_box():
    # 90 degree rotation in the y-x plane
    a = np.eye(4)
    a[1:3, 1:3] = [[0, -1], [1, 0]]
    a[1, 3] = 10.0
    sl = voxel_slices(a, (1, 10, 10), np.array([0, 5.0, 2.0]), np.array([1, 8.0, 4.0]))
    # world y = 10 - x_idx, world x = y_idx  -> y_idx in [2, 4), x_idx in (2, 5]; the voxels
    # whose extents [i - 1/2, i + 1/2) touch those: y 2..4, x 2..5
    assert sl == (slice(0, 1), slice(2, 5), slice(2, 6))
