"""Fusion speed of two git revisions side by side (a refactor must not slow fusion down).

    python benchmarks/bench_revisions.py BEFORE AFTER [--repeats 3] [--workdir /tmp/tilefuse-rev]

Each revision's ``src/`` is exported with ``git archive`` and run in fresh subprocesses,
alternating BEFORE and AFTER so that a noisy (shared) machine slows both alike, on the
4 x 4 uint16 mosaic of ``bench_fuse.py`` (64 x 960 x 960, 118 MB fused):

1. ``ts.fuse(out.ome.zarr)``: linear blending into sharded OME-Zarr (32 x 128 x 128 chunks in
   64 x 512 x 512 shards), best wall time of the repeats;
2. ``ts.fuse()`` in memory with one worker: process CPU seconds;
3. ``FusionPlan.render`` of every 32 x 128 x 128 block of a 4 x 4 mosaic of in-memory tiles,
   per blend mode: process CPU seconds, best of 8 passes (no I/O: the least noisy measure);
4. ``tilefuse export-bdv --fused``: wall time and peak RSS, and whether every level of the
   two HDF5 files is identical.

Prints a Markdown table with AFTER / BEFORE ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _measure import ROOT, run_measured
from bench_fuse import write_mosaic

from tilefuse.synthetic import cut_tiles, make_volume

HERE = Path(__file__).resolve().parent
VOXEL = (0.4, 0.17, 0.17)

MEMORY = """
import json, sys, time
from pathlib import Path
from tilefuse import Tileset
d = Path(sys.argv[1]); pos = json.loads((d / "positions.json").read_text())
files = [d / f"tile_{i:03d}.tif" for i in range(len(pos["offsets_um"]))]
ts = Tileset.from_tiff(files, pos["offsets_um"], voxel_size=pos["voxel_size"])
t0 = time.process_time()
ts.fuse(blend="linear", workers=1)
print(json.dumps({"seconds": round(time.process_time() - t0, 3)}))
"""

RENDER = """
import json, sys, time
import numpy as np
from tilefuse import Tileset
from tilefuse.fuse import FusionPlan, OutputGrid, default_blend_width
rng = np.random.default_rng(0)
tiles = [rng.integers(0, 4000, (32, 256, 256), dtype=np.uint16) for _ in range(16)]
ts = Tileset.from_arrays(tiles, [(0, 218 * (k // 4), 218 * (k % 4)) for k in range(16)])
grid = OutputGrid.covering(ts.tiles, ts.voxel_size)
out = {}
for blend in ("linear", "overwrite", "max", "mean", "centre"):
    plan = FusionPlan(ts.tiles, grid, blend=blend, blend_width=default_blend_width(ts.tiles))
    regions = [
        (slice(0, 32), slice(y, min(y + 128, grid.shape[1])), slice(x, min(x + 128, grid.shape[2])))
        for y in range(0, grid.shape[1], 128)
        for x in range(0, grid.shape[2], 128)
    ]
    best = 1e9
    for _ in range(8):
        t0 = time.process_time()
        for r in regions:
            plan.render(r)
        best = min(best, time.process_time() - t0)
    out[blend] = round(best, 4)
print(json.dumps({"seconds": 0, "render": out}))
"""

BDV = """
import json, sys, time
from tilefuse.cli import main
t0 = time.perf_counter()
rc = main(["export-bdv", sys.argv[1], "-o", sys.argv[2], "--fused", "--no-progress",
           "--voxel-size", "0.4", "0.17", "0.17"])
assert rc == 0
print(json.dumps({"seconds": round(time.perf_counter() - t0, 3)}))
"""


def export(rev: str, dest: Path) -> Path:
    """``src/`` of a revision, unpacked under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(dest, filter="data")
    return dest / "src"


def h5_identical(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        n = len(fa["s00/resolutions"])
        if n != len(fb["s00/resolutions"]):
            return False
        return all(
            np.array_equal(fa[f"t00000/s00/{k}/cells"][...], fb[f"t00000/s00/{k}/cells"][...])
            for k in range(n)
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse-rev"))
    args = p.parse_args()
    wd = args.workdir
    if wd.exists():
        shutil.rmtree(wd)
    tiles = wd / "mosaic"
    vol, _ = make_volume((64, 960, 960), seed=0, blob_radius=5)
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    write_mosaic(tiles, m.tiles, m.offsets_px)
    lines = ["dim = 3"] + [
        f"tile_{i:03d}.tif; ; ({x}, {y}, {z})" for i, (z, y, x) in enumerate(m.offsets_px)
    ]
    (tiles / "TileConfiguration.txt").write_text("\n".join(lines) + "\n")
    srcs = {"before": export(args.before, wd / "before"), "after": export(args.after, wd / "after")}
    (wd / "memory.py").write_text(MEMORY)
    (wd / "bdv.py").write_text(BDV)
    (wd / "render.py").write_text(RENDER)
    runs: dict[str, dict[str, list[dict]]] = {}
    for _ in range(args.repeats):
        for name, src in srcs.items():
            env = {"PYTHONPATH": str(src)}
            out = wd / f"{name}.ome.zarr"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, HERE / "tf_fuse.py", "--tiles", tiles, "--out", out]
            cmd += ["--chunks", 32, 128, 128, "--shards", 64, 512, 512]
            r = runs.setdefault(name, {})
            r.setdefault("zarr", []).append(run_measured(cmd, env=env))
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, wd / "memory.py", tiles]
            r.setdefault("memory_cpu", []).append(run_measured(cmd, env=env))
            r.setdefault("render", []).append(
                run_measured([sys.executable, wd / "render.py"], env=env)
            )
            h5 = wd / f"{name}.h5"
            for f in (h5, h5.with_suffix(".xml")):
                f.unlink(missing_ok=True)
            cmd = [sys.executable, wd / "bdv.py", tiles / "TileConfiguration.txt", h5]
            r.setdefault("bdv", []).append(run_measured(cmd, env=env))
    same = h5_identical(wd / "before.h5", wd / "after.h5")
    rows = [
        f"| measure | {args.before} | {args.after} | after / before |",
        "|---|---|---|---|",
    ]
    result = {"before": args.before, "after": args.after, "bdv_identical": same}
    for key, label in (
        ("zarr", "fuse -> sharded OME-Zarr, wall s (best)"),
        ("memory_cpu", "fuse in memory, 1 worker, CPU s (best)"),
        ("bdv", "export-bdv --fused, wall s (best)"),
    ):
        b = min(x["seconds"] for x in runs["before"][key])
        a = min(x["seconds"] for x in runs["after"][key])
        rows.append(f"| {label} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
        result[key] = {"before": b, "after": a}
    for blend in runs["before"]["render"][0]["render"]:
        b = min(x["render"][blend] for x in runs["before"]["render"])
        a = min(x["render"][blend] for x in runs["after"]["render"])
        rows.append(
            f"| render all blocks, blend={blend}, CPU s (best) | {b:.3f} | {a:.3f} | {a / b:.2f} |"
        )
        result[f"render_{blend}"] = {"before": b, "after": a}
    b = max(x["peak_rss_mb"] for x in runs["before"]["bdv"])
    a = max(x["peak_rss_mb"] for x in runs["after"]["bdv"])
    rows.append(f"| export-bdv --fused, peak RSS MB | {b:.0f} | {a:.0f} | {a / b:.2f} |")
    result["bdv_peak_rss_mb"] = {"before": b, "after": a}
    rows.append(f"\nexport-bdv --fused HDF5 identical (every level): {same}")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "revisions.json").write_text(json.dumps(result, indent=2))
    sys.stdout.write("\n".join(rows) + "\n")
    shutil.rmtree(wd)


if __name__ == "__main__":
    main()
