"""Label benchmarks: merge_tile_labels vs patchworks, and dedup_labels throughput.

    python benchmarks/bench_labels.py [--workdir /tmp/tilefuse-bench] [--repeats 3]

1. merge: the same per-chunk labels (64 x 1024 x 1024 int32, chunks 64 x 256 x 256,
   ``scipy.ndimage.label`` per chunk of a smooth random binary volume: about 10k
   objects; built by ``peers/patchworks_merge.py --make-input``) merged by
   ``tilefuse.merge_tile_labels`` and by ``patchworks.merge_tile_labels``
   (default call on a store: ``store`` mode; and with ``label_counts``), each
   with 2 workers, sequential IDs, output checked against whole-volume
   ``ndimage.label`` (same partition). Median time of ``--repeats`` runs; peak
   RSS of the process tree.
2. dedup: a 4 x 4 mosaic of 3D label tiles (64 x 271 x 271 each, 15 % overlap,
   IDs renumbered at random per tile) cut from a known label volume;
   ``dedup_labels`` then ``fuse_labels`` in memory, checked against the truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import ROOT, run_measured

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent
PATCHWORKS_PYTHON = Path("/work/patchworks-venv/bin/python")


def bench_merge(wd: Path, repeats: int) -> list[dict]:
    src = wd / "merge_in.zarr"
    if not src.exists():
        subprocess.run(
            [
                str(PATCHWORKS_PYTHON),
                str(HERE / "peers" / "patchworks_merge.py"),
                "--make-input",
                str(src),
            ],
            check=True,
        )
    runs = [("tilefuse merge_tile_labels", [sys.executable, HERE / "tf_merge.py", "--workers", 2])]
    if PATCHWORKS_PYTHON.exists():
        pw = [PATCHWORKS_PYTHON, HERE / "peers" / "patchworks_merge.py", "--workers", 2]
        runs += [
            ("patchworks (store: default call)", [*pw, "--mode", "store"]),
            ("patchworks (with label_counts)", [*pw, "--mode", "counts"]),
        ]
    rows = []
    for label, cmd in runs:
        reps = [
            run_measured([*cmd, "--input", src, "--out", wd / "merge_out.zarr"])
            for _ in range(repeats)
        ]
        secs = [r["seconds"] for r in reps]
        med = statistics.median(secs)
        rows.append(
            {
                "label": label,
                "seconds_median": med,
                "seconds_all": secs,
                "mvox_per_s": round(64 * 1024 * 1024 / 1e6 / med, 1),
                "peak_rss_mb": max(r.get("merge_peak_rss_mb", r["peak_rss_mb"]) for r in reps),
                "tree_peak_rss_mb": max(r["peak_rss_mb"] for r in reps),
                "n_labels": reps[0]["n_labels"],
                "matches_truth": all(r.get("matches_truth") for r in reps),
            }
        )
    return rows


def bench_dedup() -> dict:
    from tests_like import label_tiles

    from tilefuse import Tileset

    truth, tiles, offsets = label_tiles()
    ts = Tileset.from_arrays(tiles, offsets)
    t0 = time.perf_counter()
    mapping = ts.dedup_labels()
    t1 = time.perf_counter()
    fused = ts.fuse_labels(mapping=mapping)
    t2 = time.perf_counter()
    pairs = np.unique(np.stack([truth[truth > 0], fused[fused > 0]]).astype(np.int64), axis=1)
    ok = (
        np.array_equal(truth > 0, fused > 0)
        and len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
    )
    vox = sum(t.size for t in tiles)
    return {
        "tiles": len(tiles),
        "tile_voxels": vox,
        "objects": mapping.n_objects,
        "labels_per_tile_total": int(sum(len(np.unique(t)) - 1 for t in tiles)),
        "dedup_s": round(t1 - t0, 3),
        "dedup_mvox_per_s": round(vox / 1e6 / (t1 - t0), 1),
        "fuse_labels_s": round(t2 - t1, 3),
        "matches_truth": bool(ok),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse-bench"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    merge = bench_merge(args.workdir, args.repeats)
    dedup = bench_dedup()
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "labels.json").write_text(
        json.dumps({"merge": merge, "dedup": dedup}, indent=2)
    )
    lines = [
        "| merge run | median s | Mvox/s | peak RSS MB | objects | same partition as ndimage.label |",
        "|---|---|---|---|---|---|",
    ]
    for r in merge:
        lines.append(
            f"| {r['label']} | {r['seconds_median']:.2f} | {r['mvox_per_s']} | {r['peak_rss_mb']} "
            f"| {r['n_labels']} | {r['matches_truth']} |"
        )
    lines += ["", json.dumps(dedup)]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
