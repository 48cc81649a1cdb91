import numpy as np
import pytest

from tilefuse.pyramid import downsample, downsample_factors


def reference_mean(a, f):
    """Mean of each window over the voxels that exist, rounded half up (integers)."""
    out_shape = [-(-n // k) for n, k in zip(a.shape, f, strict=True)]
    out = np.zeros(out_shape)
    for idx in np.ndindex(*out_shape):
        sl = tuple(slice(i * k, (i + 1) * k) for i, k in zip(idx, f, strict=True))
        out[idx] = a[sl].mean()
    return out


@pytest.mark.parametrize("shape", [(4, 6, 8), (5, 7, 9), (1, 3, 5)])
@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 2, 2), (1, 3, 2)])
def test_mean_matches_reference_with_partial_windows(shape, factors):
    a = np.random.default_rng(0).integers(0, 60000, shape).astype(np.uint16)
    got = downsample(a, factors, "mean")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, np.floor(reference_mean(a.astype(float), factors) + 0.5))
    f = a.astype(np.float32)
    np.testing.assert_allclose(
        downsample(f, factors, "mean"), reference_mean(f, factors), rtol=1e-6
    )


def test_mean_keeps_leading_channel_axis():
    a = np.random.default_rng(1).integers(0, 255, (3, 4, 6, 6)).astype(np.uint8)
    got = downsample(a, (2, 2, 2))
    assert got.shape == (3, 2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[c], downsample(a[c], (2, 2, 2)))


def test_mode_background_never_wins_a_tie():
    a = np.zeros((2, 2, 2), np.uint32)
    a[0] = 7  # 4 x 7, 4 x 0
    assert downsample(a, (2, 2, 2), "mode")[0, 0, 0] == 7
    b = np.zeros((2, 2, 2), np.uint32)
    b[0, 0, :] = 5
    b[1, 1, 1] = 5  # 3 x 5, 5 x 0: background is the strict majority
    assert downsample(b, (2, 2, 2), "mode")[0, 0, 0] == 0
    c = np.zeros((2, 2, 2), np.uint32)
    c.flat[[1, 2]] = 9
    c.flat[[5, 6]] = 4  # 2 x 9, 2 x 4, 4 x 0 -> 0 has the most
    assert downsample(c, (2, 2, 2), "mode")[0, 0, 0] == 0
    c.flat[[0, 3]] = 4  # 4 x 4, 2 x 9, 2 x 0
    assert downsample(c, (2, 2, 2), "mode")[0, 0, 0] == 4
    d = np.array([3, 8, 8, 3, 0, 0, 1, 2], np.uint32).reshape(2, 2, 2)  # tie 3 vs 8 vs 0
    assert downsample(d, (2, 2, 2), "mode")[0, 0, 0] == 3  # first label in voxel order


def test_mode_invents_no_labels_and_handles_edges():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 6, (5, 9, 11)).astype(np.uint16) * 1000
    got = downsample(a, (2, 2, 2), "mode")
    assert got.shape == (3, 5, 6)
    assert set(np.unique(got)) <= set(np.unique(a))
    # a 1-voxel edge window keeps exactly that voxel
    assert got[2, 4, 5] == a[4, 8, 10]


def test_nearest_and_factor_rules():
    a = np.arange(4 * 4 * 4).reshape(4, 4, 4)
    np.testing.assert_array_equal(downsample(a, (2, 2, 2), "nearest"), a[::2, ::2, ::2])
    assert downsample_factors((40, 512, 512), (0.4, 0.17, 0.17)) == (1, 2, 2)
    assert downsample_factors((40, 512, 512), (0.3, 0.17, 0.17)) == (2, 2, 2)
    assert downsample_factors((1, 512, 512), (1, 1, 1)) == (1, 2, 2)
    with pytest.raises(ValueError, match="method"):
        downsample(a, (2, 2, 2), "median")


def _brute_mode(a, factors):
    """Mode of each window by counting in plain Python (independent of the kernel).

    Most frequent value among the voxels that exist; a nonzero label wins a tie against 0;
    among tied labels the one met first in voxel (C) order.
    """
    from collections import Counter
    from itertools import product

    out_shape = tuple(-(-n // f) for n, f in zip(a.shape, factors, strict=True))
    out = np.zeros(out_shape, a.dtype)
    for idx in product(*[range(n) for n in out_shape]):
        win = a[tuple(slice(i * f, (i + 1) * f) for i, f in zip(idx, factors, strict=True))]
        vals = [int(v) for v in win.ravel()]
        counts = Counter(vals)
        best = max(counts.values())
        tied = [v for v in dict.fromkeys(vals) if counts[v] == best]
        nonzero = [v for v in tied if v != 0]
        out[idx] = nonzero[0] if nonzero else 0
    return out


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 3, 2), (3, 3, 3), (2, 1, 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_mode_matches_a_brute_force_mode(factors, seed):
    rng = np.random.default_rng(seed)
    # few labels and plenty of background, so ties of every kind occur; odd sizes: partial windows
    a = rng.choice(np.array([0, 0, 3, 5, 9, 2**40 + 1], np.uint64), size=(7, 11, 13))
    got = downsample(a, factors, "mode")
    np.testing.assert_array_equal(got, _brute_mode(a, factors))
    assert set(np.unique(got)) <= set(np.unique(a))
