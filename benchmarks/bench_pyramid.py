"""Pyramid writing benchmark: MultiScaleGroup vs ome-zarr-py vs stack-to-chunk.

    python benchmarks/bench_pyramid.py [--shape 256 1024 1024] [--workdir /tmp/tilefuse-bench]

The same uint16 (z, y, x) array (smooth textured background, bright blobs,
noise; saved once as .npy and memory-mapped by every tool) is written as a
3-level OME-Zarr pyramid with chunks (64, 256, 256) by:

- tilefuse `MultiScaleGroup` (2x2x2 mean, and yx-only to match ome-zarr-py),
  unsharded and sharded;
- ome-zarr-py 0.18 ``write_image`` (halves y and x only; skimage resize);
- stack-to-chunk 2.1 (2x2x2 mean; always sharded, full-plane shards).

Each run is a fresh subprocess; peak RSS covers the whole process tree.
Results: a Markdown table on stdout and benchmarks/results/pyramid.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import zarr
from _measure import ROOT, peers_python, run_measured
from scipy import ndimage

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent


def textured_stack(shape, seed=0) -> np.ndarray:
    """Microscopy-like uint16: smooth background, sparse bright blobs, noise; built plane-wise."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    low = ndimage.gaussian_filter(rng.random((z // 8 + 2, y // 8 + 2, x // 8 + 2)), 1.5)
    bg = ndimage.zoom(low, 8, order=1)[:z, :y, :x]
    bg = (bg - bg.min()) / np.ptp(bg) * 400 + 100
    out = np.empty(shape, np.uint16)
    blob = np.exp(-(np.sum(np.indices((9, 9, 9)) - 4.0, axis=0) ** 2) / 8)
    n = int(np.prod(shape) / 20000)
    cz, cy, cx = (rng.integers(0, s - 9, n) for s in shape)
    img = bg.astype(np.float32)
    for a, b, c in zip(cz, cy, cx, strict=True):
        img[a : a + 9, b : b + 9, c : c + 9] += 3000 * blob
    for k in range(z):
        out[k] = np.clip(rng.poisson(img[k]), 0, 65535)
    return out


def level_shapes(path: Path) -> list:
    g = zarr.open_group(str(path), mode="r")
    return [list(a.shape) for _, a in sorted(g.arrays())]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", type=int, nargs=3, default=(256, 1024, 1024))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse-bench"))
    p.add_argument("--skip-peers", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    src = wd / f"stack_{'x'.join(map(str, args.shape))}.npy"
    if not src.exists():
        np.save(src, textured_stack(tuple(args.shape)))
    nbytes = src.stat().st_size
    chunks = ["--chunks", 64, 256, 256]
    py = sys.executable
    runs = [
        ("tilefuse MultiScaleGroup, 2x2x2 mean", [py, HERE / "tf_pyramid.py", *chunks]),
        (
            "tilefuse MultiScaleGroup, 2x2x2 mean, sharded 256x512x512",
            [py, HERE / "tf_pyramid.py", *chunks, "--shards", 256, 512, 512],
        ),
        (
            "tilefuse MultiScaleGroup, yx-only mean (as ome-zarr-py)",
            [py, HERE / "tf_pyramid.py", *chunks, "--factors", 1, 2, 2],
        ),
    ]
    if not args.skip_peers:
        runs += [
            (
                "ome-zarr-py write_image (yx only)",
                [peers_python(), HERE / "peers" / "pyramid_omezarr.py", *chunks],
            ),
            (
                "stack-to-chunk (2x2x2 mean, sharded)",
                [peers_python(), HERE / "peers" / "pyramid_s2c.py", *chunks],
            ),
        ]
    results = []
    for label, cmd in runs:
        out = wd / "pyramid.ome.zarr"
        if out.exists():
            shutil.rmtree(out)
        r = run_measured([*cmd, "--input", src, "--out", out, "--levels", 3])
        r.update(label=label, mb_per_s=round(nbytes / 1e6 / r["seconds"], 1))
        r["disk_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 1)
        results.append(r)
        shutil.rmtree(out)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "pyramid.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"input {list(args.shape)} uint16, {nbytes / 1e6:.0f} MB; chunks 64x256x256; 3 levels",
        "",
        "| tool | seconds | MB/s (level-0 MB / s) | peak RSS MB | disk MB | level shapes |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['seconds']:.1f} | {r['mb_per_s']} | {r['peak_rss_mb']} "
            f"| {r['disk_mb']} | {r.get('levels')} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
