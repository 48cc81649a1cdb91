"""Fusion benchmark: tilefuse vs multiview-stitcher, plus tilefuse memory at two sizes.

    python benchmarks/bench_fuse.py [--workdir /tmp/tilefuse-bench] [--skip-peer] [--skip-scaling]

1. Comparison (each tool run ``--repeats`` times, best time and highest peak RSS kept): a synthetic 4 x 4 mosaic of 3D uint16 tiles cut from a known
   (64, 960, 960) volume (118 MB fused, the size of the reference measurement),
   15 % overlap, voxel (0.4, 0.17, 0.17) um. Both tools read the same TIFFs and
   positions, fuse with linear blending into zarr with the same output chunks
   (64, 256, 256); tilefuse also with its default sharded layout. Each run is a
   fresh subprocess; peak RSS is the whole process tree's.
2. Scaling: tilefuse alone on 3 x 3 and 8 x 8 grids of (64, 768, 768) tiles
   (about 0.6 GB and 4 GB fused) to show peak memory does not grow with size.

Results: a Markdown table on stdout and benchmarks/results/fuse.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile
import zarr
from _measure import ROOT, ZARRS_ENV, ZARRS_PYTHON, peers_python, run_measured

from tilefuse.synthetic import cut_tiles, make_volume

log = logging.getLogger("bench")
VOXEL = (0.4, 0.17, 0.17)
HERE = Path(__file__).resolve().parent


def write_mosaic(folder: Path, tiles: list[np.ndarray], offsets_px: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(tiles):
        tifffile.imwrite(folder / f"tile_{i:03d}.tif", t, photometric="minisblack")
    (folder / "positions.json").write_text(
        json.dumps({"voxel_size": VOXEL, "offsets_um": (offsets_px * VOXEL).tolist()})
    )


def noise_tiles(grid: int, shape=(64, 768, 768), overlap=0.1, seed=0):
    """Cheap textured tiles for the memory-scaling runs (content need not match)."""
    rng = np.random.default_rng(seed)
    step = int(shape[1] * (1 - overlap))
    tiles, offs = [], []
    base = rng.integers(90, 120, shape, dtype=np.uint16)
    for r in range(grid):
        for c in range(grid):
            t = base.copy()
            for _ in range(40):
                z, y, x = (rng.integers(0, s - 16) for s in shape)
                t[z : z + 8, y : y + 16, x : x + 16] += np.uint16(rng.integers(500, 3000))
            tiles.append(t)
            offs.append((0, r * step, c * step))
    return tiles, np.array(offs, dtype=float)


def compare_to_truth(store: Path, truth: np.ndarray) -> dict:
    g = zarr.open(str(store), mode="r")
    arr = g["0"] if isinstance(g, zarr.Group) else g
    data = np.asarray(arr[...]).reshape(truth.shape)
    diff = np.abs(data.astype(np.int64) - truth)
    return {"max_abs_err": int(diff.max()), "mean_abs_err": round(float(diff.mean()), 4)}


def disk_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse-bench"))
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="runs per tool; best time is kept")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    results: dict = {"compare": [], "scaling": []}

    vol, _ = make_volume((64, 960, 960), seed=0, blob_radius=5)
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    tiles_dir = wd / "mosaic4x4"
    if tiles_dir.exists():
        shutil.rmtree(tiles_dir)
    write_mosaic(tiles_dir, m.tiles, m.offsets_px)
    runs = [
        ("tilefuse (chunks 64x256x256)", [py, HERE / "tf_fuse.py", "--chunks", 64, 256, 256]),
        (
            "tilefuse (sharded 32x128x128 in 64x512x512)",
            [py, HERE / "tf_fuse.py", "--chunks", 32, 128, 128, "--shards", 64, 512, 512],
        ),
    ]
    if ZARRS_PYTHON.exists():
        runs.append(
            (
                "tilefuse + zarrs codec pipeline (sharded, as above)",
                [
                    ZARRS_PYTHON,
                    HERE / "tf_fuse.py",
                    "--chunks",
                    32,
                    128,
                    128,
                    "--shards",
                    64,
                    512,
                    512,
                ],
            )
        )
    if not args.skip_peer:
        runs.append(
            (
                "multiview-stitcher (chunks 64x256x256)",
                [peers_python(), HERE / "peers" / "mvs_fuse.py", "--chunks", 64, 256, 256],
            )
        )
    for k, (label, cmd) in enumerate(runs):
        out = wd / f"run{k}.zarr"
        env = ZARRS_ENV if "zarrs" in label else None
        if out.exists():
            shutil.rmtree(out)
        reps = []
        for _ in range(args.repeats):
            if out.exists():
                shutil.rmtree(out)
            reps.append(run_measured([*cmd, "--tiles", tiles_dir, "--out", out], env=env))
        r = min(reps, key=lambda x: x["seconds"])
        r["seconds_all"] = [x["seconds"] for x in reps]
        r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in reps)
        r.update(label=label, mb_per_s=round(r["out_bytes"] / 1e6 / r["seconds"], 2))
        r.update(compare_to_truth(out, vol), disk_mb=disk_mb(out))
        results["compare"].append(r)
        shutil.rmtree(out)

    if not args.skip_scaling:
        for grid in (3, 8):
            d = wd / f"noise{grid}x{grid}"
            tiles, offs = noise_tiles(grid)
            write_mosaic(d, tiles, offs)
            del tiles
            out = wd / f"scaling{grid}.ome.zarr"
            r = run_measured(
                [
                    py,
                    HERE / "tf_fuse.py",
                    "--tiles",
                    d,
                    "--out",
                    out,
                    "--chunks",
                    32,
                    128,
                    128,
                    "--shards",
                    64,
                    512,
                    512,
                ]
            )
            r.update(grid=f"{grid}x{grid}", mb_per_s=round(r["out_bytes"] / 1e6 / r["seconds"], 2))
            results["scaling"].append(r)
            shutil.rmtree(out)
            shutil.rmtree(d)

    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "fuse.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| run | fused MB | seconds | MB/s | peak RSS MB | max abs err vs truth | disk MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["compare"]:
        lines.append(
            f"| {r['label']} | {r['out_bytes'] / 1e6:.0f} | {r['seconds']:.2f} | {r['mb_per_s']} "
            f"| {r['peak_rss_mb']} | {r['max_abs_err']} | {r['disk_mb']} |"
        )
    if results["scaling"]:
        lines += [
            "",
            "| tilefuse grid | fused MB | seconds | MB/s | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        for r in results["scaling"]:
            lines.append(
                f"| {r['grid']} | {r['out_bytes'] / 1e6:.0f} | {r['seconds']:.1f} | {r['mb_per_s']} "
                f"| {r['peak_rss_mb']} |"
            )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
