"""Resume overhead: planning the rest of an interrupted fusion, at 10k and 100k blocks.

Tiny blocks (8 x 8 voxels, one shard each) make the block count large on a
small volume. For each size the script

1. runs an uninterrupted fusion into a store (``full_s``; at 100k blocks only
   with ``--full``, otherwise extrapolated from the 10k per-block cost),
2. builds an interrupted store: created by the writer, half its blocks
   recorded as done through the writer's progress log,
3. times what a rerun does before writing resumes (``resume_plan_s``): lock,
   open, fingerprint check, read the done set once, list the pending blocks.

Prints one JSON line per size. Usage::

    python benchmarks/bench_resume.py            # 10k and 100k blocks
    python benchmarks/bench_resume.py --full     # also run the 100k fusion
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tilefuse import Tileset
from tilefuse.fuse import FusionPlan
from tilefuse.options import ExecOptions, FusionOptions, OutputOptions
from tilefuse.writers import OmeZarrWriter


def mosaic(n_blocks: int) -> Tileset:
    """2 x 2 tiles of one plane whose fused output has about ``n_blocks`` 8 x 8 blocks."""
    side = int(np.sqrt(n_blocks)) * 8
    half = side // 2 + 8
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 1000, (1, half, half), dtype=np.uint16) for _ in range(4)]
    offs = [(0, y, x) for y in (0, side - half) for x in (0, side - half)]
    return Tileset.from_arrays(tiles, offs, voxel_size=(1, 1, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--full", action="store_true", help="run the largest fusion too")
    args = ap.parse_args()
    out = OutputOptions(chunks=(1, 8, 8), shards=(1, 8, 8), compression="none")
    ex = ExecOptions(workers=2)
    per_block = None
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    try:
        for n in args.sizes:
            ts = mosaic(n)
            plan = FusionPlan.from_options(ts.tiles, FusionOptions(blend="overwrite"))
            full_s, measured = None, False
            if per_block is None or args.full:
                t0 = time.perf_counter()
                ts.fuse(
                    root / f"full{n}.ome.zarr",
                    options=plan_options(),
                    output_options=out,
                    exec_options=ex,
                )
                full_s, measured = time.perf_counter() - t0, True
            # an interrupted store: created by the writer, half its blocks recorded done
            w = OmeZarrWriter(root / f"half{n}.ome.zarr", out)
            w.begin(plan.spec())
            blocks = w.grid.blocks()
            t0 = time.perf_counter()
            for b in blocks[::2]:
                w.group.mark_done(b, 0)
            record_s = time.perf_counter() - t0
            w.abort()
            n_files = sum(1 for _ in (root / f"half{n}.ome.zarr" / ".tilefuse-progress").rglob("*"))
            # what a rerun does before it writes again
            t0 = time.perf_counter()
            w2 = OmeZarrWriter(root / f"half{n}.ome.zarr", out)
            w2.begin(plan.spec())
            todo = w2.pending_blocks()
            plan_s = time.perf_counter() - t0
            w2.abort()
            assert len(todo) == len(blocks) - len(blocks[::2])
            if measured:
                per_block = full_s / len(blocks)
            else:
                full_s = per_block * len(blocks)
            print(
                json.dumps(
                    {
                        "blocks": len(blocks),
                        "full_s": round(full_s, 2),
                        "full_measured": measured,
                        "record_half_s": round(record_s, 3),
                        "progress_files": n_files,
                        "resume_plan_s": round(plan_s, 3),
                        "resume_overhead_pct": round(100 * plan_s / full_s, 2),
                    }
                ),
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plan_options() -> FusionOptions:
    return FusionOptions(blend="overwrite")


if __name__ == "__main__":
    main()
