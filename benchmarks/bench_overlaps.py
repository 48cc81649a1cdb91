"""Overlap search on large regular grids: the grid index vs the all-pairs test.

    python benchmarks/bench_overlaps.py

Grids of n x n 3D tiles (100 x 2048 x 2048 voxels, 10 % overlap, small random
stage jitter). tilefuse's `Tileset.overlaps()` (grid index plus the
intersection boxes and voxel slices of every pair) against a vectorised
all-pairs box test (what a user would write with numpy; only the pair list, no
boxes). Prints a Markdown table; results also in benchmarks/results/overlaps.json.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from tilefuse import Tile, Tileset
from tilefuse.geometry import affine_from_offset, overlapping_pairs


class NoPixels:
    """A source with a shape and no data: overlap search never reads pixels."""

    shape = (1, 100, 2048, 2048)
    dtype = np.dtype(np.uint16)

    def read(self, region):  # pragma: no cover - never called here
        raise AssertionError("overlap search must not read pixels")


def grid_tileset(n: int, seed: int = 0) -> Tileset:
    rng = np.random.default_rng(seed)
    step = 2048 * 0.9 * 0.17
    vs = (0.4, 0.17, 0.17)
    src = NoPixels()
    tiles = [
        Tile(
            src,
            affine_from_offset(vs, (0.0, r * step + rng.normal(0, 2), c * step + rng.normal(0, 2))),
        )
        for r in range(n)
        for c in range(n)
    ]
    return Tileset(tiles)


def all_pairs(lo: np.ndarray, hi: np.ndarray) -> int:
    count = 0
    for i in range(len(lo)):  # row by row: an (n, n, 3) array would not fit for n = 10^4
        ok = np.all((np.maximum(lo[i], lo[i + 1 :]) < np.minimum(hi[i], hi[i + 1 :])), axis=1)
        count += int(ok.sum())
    return count


def main() -> None:
    rows = []
    for n in (25, 50, 100):
        ts = grid_tileset(n)
        t0 = time.perf_counter()
        ovs = ts.overlaps()
        t_sweep = time.perf_counter() - t0
        tracemalloc.start()  # a second, traced run for the memory peak (tracing slows it)
        grid_tileset(n).overlaps()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        boxes = [t.box for t in ts]
        lo = np.array([b[0] for b in boxes])
        hi = np.array([b[1] for b in boxes])
        t0 = time.perf_counter()
        n_pairs_only = len(overlapping_pairs(lo, hi))
        t_pairs = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_brute = all_pairs(lo, hi)
        t_brute = time.perf_counter() - t0
        assert n_brute == len(ovs) == n_pairs_only
        rows.append(
            {
                "grid": f"{n}x{n}",
                "tiles": n * n,
                "pairs": len(ovs),
                "overlaps_s": round(t_sweep, 3),
                "sweep_pairs_only_s": round(t_pairs, 4),
                "all_pairs_s": round(t_brute, 3),
                "speedup_pairs": round(t_brute / t_pairs, 1),
                "overlaps_peak_mb": round(peak / 2**20, 1),
            }
        )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "overlaps.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| grid | tiles | pairs | `overlaps()` s (boxes + slices) | grid-index pairs s | all-pairs s "
        "| grid-index speed-up | `overlaps()` peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['grid']} | {r['tiles']} | {r['pairs']} | {r['overlaps_s']} | "
            f"{r['sweep_pairs_only_s']} | {r['all_pairs_s']} | {r['speedup_pairs']}x | "
            f"{r['overlaps_peak_mb']} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
