"""Global optimisation at scale: a side x side grid of tiles with some bad links.

    python benchmarks/bench_solve.py [--sides 100 200] [--bad 100 20]

Links join grid neighbours with the true relative shift plus 0.02 um noise; ``bad``
random links (no two on one tile: a tile with half its links wrong is ambiguous to any
method) get +25 um / -25 um in y / x. Reports the solve time (best of 2),
how many bad links were dropped and how many good links were dropped, and the
RMS placement error. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tilefuse.register import Link, _optimise


def grid_links(side: int, n_bad: int, seed: int = 0) -> tuple[np.ndarray, list[Link], set[int]]:
    rng = np.random.default_rng(seed)
    n = side * side
    true = np.c_[np.zeros(n), rng.normal(0, 2, (n, 2))]
    links = []
    for r in range(side):
        for c in range(side):
            i = r * side + c
            for j in ([i + 1] if c + 1 < side else []) + ([i + side] if r + 1 < side else []):
                links.append(Link(i, j, true[j] - true[i] + rng.normal(0, 0.02, 3), 0.9, 10000))
    # no tile gets two bad links: a tile with half its links wrong is ambiguous to any method
    bad: set[int] = set()
    touched: set[int] = set()
    for k in rng.permutation(len(links)):
        if len(bad) == n_bad:
            break
        if links[k].i not in touched and links[k].j not in touched:
            bad.add(int(k))
            touched.update((links[k].i, links[k].j))
    for k in bad:
        links[k].shift_um = links[k].shift_um + np.array([0, 25.0, -25.0])
    return true, links, bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sides", type=int, nargs="+", default=[20, 100, 200])
    ap.add_argument("--bad", type=int, nargs="+", default=[8, 100, 20])
    args = ap.parse_args()
    print(
        "| tiles | links | bad links | solve time (s) | bad dropped | good dropped | RMS error (um) |"
    )
    print("|---|---|---|---|---|---|---|")
    for side, n_bad in zip(args.sides, args.bad, strict=True):
        best = np.inf
        for _ in range(2):
            true, links, bad = grid_links(side, n_bad)
            t0 = time.perf_counter()
            e = _optimise(side * side, links, 2.5, 3.5)
            best = min(best, time.perf_counter() - t0)
        dropped = {k for k, link in enumerate(links) if not link.kept}
        err = (e - e[0]) - (true - true[0])
        rms = float(np.sqrt((err**2).sum(1).mean()))
        print(
            f"| {side * side} | {len(links)} | {n_bad} | {best:.2f} | {len(dropped & bad)}/{n_bad}"
            f" | {len(dropped - bad)} | {rms:.3f} |"
        )


if __name__ == "__main__":
    main()
