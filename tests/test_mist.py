"""The real NIST MIST 5x5 grid, placed with MIST's own global positions."""

import re

import numpy as np
import pytest
import tifffile

from tilefuse import Tileset

POS = re.compile(r"file: (\S+); corr: \S+; position: \((-?\d+), (-?\d+)\); grid: \((\d+), (\d+)\);")


@pytest.fixture(scope="module")
def mist(shared_data):
    folder = shared_data / "mist-5x5"
    rows = []
    for line in (folder / "reference" / "global-positions-1.txt").read_text().splitlines():
        m = POS.match(line.strip())
        if m:
            rows.append(
                (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
            )
    assert len(rows) == 25
    files = [folder / r[0] for r in rows]
    offsets = [(0.0, float(r[2]), float(r[1])) for r in rows]  # MIST gives (x, y) pixels
    return Tileset.from_tiff(files, offsets), rows


def test_mist_mosaic_size_and_overlaps(mist):
    ts, rows = mist
    assert len(ts) == 25 and ts.is_2d and ts.dtype == np.uint16
    assert ts[0].shape == (1, 183, 245)
    xs = np.array([r[1] for r in rows])
    ys = np.array([r[2] for r in rows])
    want_shape = (1, ys.max() + 183 - ys.min(), xs.max() + 245 - xs.min())
    ovs = ts.overlaps()
    pairs = {(o.i, o.j) for o in ovs}
    grid = {(r[3], r[4]): k for k, r in enumerate(rows)}
    # every horizontal and vertical grid neighbour overlaps
    for (gx, gy), k in grid.items():
        for nb in ((gx + 1, gy), (gx, gy + 1)):
            if nb in grid:
                assert (min(k, grid[nb]), max(k, grid[nb])) in pairs
    # ... and the search agrees with a brute-force box test
    brute = {
        (i, j)
        for i in range(25)
        for j in range(i + 1, 25)
        if abs(ys[i] - ys[j]) < 183 and abs(xs[i] - xs[j]) < 245
    }
    assert pairs == brute
    fused = ts.fuse(blend="overwrite")
    assert fused.shape == want_shape
    # with overwrite, the last tile is intact at its MIST position
    last = tifffile.imread(ts[24].metadata["path"])
    y0, x0 = ys[24] - ys.min(), xs[24] - xs.min()
    np.testing.assert_array_equal(fused[0, y0 : y0 + 183, x0 : x0 + 245], last)
    # every voxel inside the union of tiles is covered (no holes between MIST positions)
    assert (fused > 0).mean() > 0.95


def test_mist_overlap_regions_agree(mist):
    """MIST's positions are good: overlapping pixels of neighbours correlate strongly."""
    ts, rows = mist
    grid = [(r[3], r[4]) for r in rows]
    ncc = []
    for o in ts.overlaps():
        (xi, yi), (xj, yj) = grid[o.i], grid[o.j]
        if abs(xi - xj) + abs(yi - yj) != 1:
            continue  # diagonal neighbours share only slivers
        a = ts[o.i].read(o.slices_i).astype(float).ravel()
        b = ts[o.j].read(o.slices_j).astype(float).ravel()
        ncc.append(np.corrcoef(a, b)[0, 1])
    assert len(ncc) == 40
    assert np.median(ncc) > 0.9
