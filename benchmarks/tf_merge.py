"""tilefuse side of the label-merge benchmark (same CLI as peers/patchworks_merge.py).

    python tf_merge.py --input IN.zarr --out OUT.zarr [--workers N]

IN.zarr is the group written by ``peers/patchworks_merge.py --make-input``
(array ``labels``: per-chunk ``scipy.ndimage.label`` output, IDs restarting at
1 in every chunk). Runs ``tilefuse.merge_tile_labels(IN, OUT,
sequential_labels=True)`` (the input is only read) and prints one JSON line:
tool, version, seconds, mvox_per_s, n_labels, matches_truth (checked after
timing against IN_truth.npy, chunk by chunk) and merge_peak_rss_mb (this
process's RSS sampled every 20 ms during the merge call only, as the peer
script reports it).
"""

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zarr

import tilefuse
from tilefuse import merge_tile_labels


def check(out: zarr.Array, truth_file: Path) -> tuple[int, bool | None]:
    n = set()
    pairs = set()
    truth = np.load(truth_file, mmap_mode="r") if truth_file.exists() else None
    ok = True
    for z0 in range(0, out.shape[0], out.chunks[0]):
        for y0 in range(0, out.shape[1], out.chunks[1]):
            sl = (slice(z0, z0 + out.chunks[0]), slice(y0, y0 + out.chunks[1]), slice(None))
            m = out[sl]
            n.update(np.unique(m[m > 0]).tolist())
            if truth is not None:
                t = np.asarray(truth[sl])
                ok &= bool(np.array_equal(t > 0, m > 0))
                pairs.update(
                    map(tuple, np.unique(np.stack([t[t > 0], m[m > 0]]), axis=1).T.tolist())
                )
    if truth is None:
        return len(n), None
    a = {p[0] for p in pairs}
    b = {p[1] for p in pairs}
    return len(n), ok and len(a) == len(b) == len(pairs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.out.exists():
        shutil.rmtree(args.out)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out = merge_tile_labels(args.input, args.out, sequential_labels=True, n_workers=args.workers)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    n, ok = check(out, args.input.with_name(args.input.name.removesuffix(".zarr") + "_truth.npy"))
    vox = int(np.prod(out.shape))
    sys.stdout.write(
        json.dumps(
            {
                "tool": "tilefuse",
                "version": tilefuse.__version__,
                "seconds": round(seconds, 3),
                "mvox_per_s": round(vox / 1e6 / seconds, 1),
                "n_labels": n,
                "matches_truth": ok,
                "merge_peak_rss_mb": round(peak[0] / 2**20, 1),
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
