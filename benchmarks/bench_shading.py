"""Flat-field accuracy and speed: tilefuse vs BaSiCPy on the same synthetic stack.

    python benchmarks/bench_shading.py [--basicpy /work/venvs/basicpy/bin/python]

Data (made once, in /tmp/tilefuse-bench/shading): ``make_volume((16, 960,
960), seed=2)`` scaled to 500..18500 counts, cut into a 4 x 4 grid of
overlapping tiles (15 %, tiles (16, 271, 271), 256 planes in all), each tile
``flatfield * (gain * volume + offset)`` with a radial vignetting 40 % darker
at the corners (`tilefuse.synthetic.shaded_mosaic`), gains uniform in
[0.7, 1.4] and offsets in [0, 5 %] of the mean; uint16.

- tilefuse, shading only: `tilefuse.shading.estimate_shading` on a random
  sample of 200 of the 256 planes (``max_planes``, the default);
- tilefuse, with overlaps: `Tileset.estimate_corrections(offsets=True)` (the
  sample estimate refined by the tile overlaps, jointly with the gains);
- BaSiCPy ``BaSiC(get_darkfield=False).fit`` on all 256 planes, its defaults,
  in its own venv (``python -m venv /work/venvs/basicpy && .../pip install
  basicpy``), ``benchmarks/peers/basicpy_fit.py``.

Each runs in its own subprocess (``run_measured``): time is the tool's own
timer around the fit (data already in memory); peak RSS of the process.
Error: RMS over the field of view of ``estimate / truth - 1`` after both are
scaled to mean 1. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import ROOT, run_measured

DATA = Path("/tmp/tilefuse-bench/shading")
BASICPY = Path("/work/venvs/basicpy/bin/python")


def make_data(folder: Path) -> None:
    from tilefuse.synthetic import make_volume, shaded_mosaic

    folder.mkdir(parents=True, exist_ok=True)
    vol, _ = make_volume((16, 960, 960), seed=2, dtype=np.float32)
    sm = shaded_mosaic(vol.astype(np.float64) * 18000 + 500, (4, 4), corner=0.4, seed=3)
    for k, t in enumerate(sm.tiles):
        np.save(folder / f"tile_{k:03d}.npy", t)
    np.save(folder / "flatfield_truth.npy", sm.flatfield)
    (folder / "positions.json").write_text(json.dumps({"offsets_px": sm.offsets_px.tolist()}))


def worker_tilefuse(folder: Path, mode: str) -> None:
    import tilefuse
    from tilefuse import Tileset
    from tilefuse.shading import estimate_shading

    offs = json.loads((folder / "positions.json").read_text())["offsets_px"]
    arrays = [np.load(f) for f in sorted(folder.glob("tile_*.npy"))]
    ts = Tileset.from_arrays(arrays, offs)
    t0 = time.perf_counter()
    if mode == "shading":
        flat = estimate_shading(ts.tiles, max_planes=200).flatfield
    else:
        flat = ts.estimate_corrections(offsets=True).flatfield[0]
    seconds = time.perf_counter() - t0
    np.save(folder / f"tilefuse_{mode}_flatfield.npy", flat)
    print(json.dumps({"tool": "tilefuse", "version": tilefuse.__version__, "seconds": seconds}))


def rms_error(est: np.ndarray, truth: np.ndarray) -> float:
    e = np.asarray(est, float) / np.mean(est)
    return float(np.sqrt(np.mean((e / (truth / truth.mean()) - 1) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("shading", "overlaps"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--basicpy", type=Path, default=BASICPY)
    args = p.parse_args()
    if args.worker:
        worker_tilefuse(args.data, args.worker)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not (args.data / "flatfield_truth.npy").exists():
        make_data(args.data)
    truth = np.load(args.data / "flatfield_truth.npy")
    runs = {
        "tilefuse `estimate_shading` (200 sampled planes)": (
            [sys.executable, __file__, "--worker", "shading", "--data", args.data],
            "tilefuse_shading_flatfield.npy",
        ),
        "tilefuse `estimate_corrections` (sample + overlaps, with gains)": (
            [sys.executable, __file__, "--worker", "overlaps", "--data", args.data],
            "tilefuse_overlaps_flatfield.npy",
        ),
    }
    if args.basicpy.exists():
        runs["BaSiCPy `BaSiC(get_darkfield=False).fit` (all 256 planes)"] = (
            [args.basicpy, ROOT / "benchmarks" / "peers" / "basicpy_fit.py", "--data", args.data],
            "basicpy_flatfield.npy",
        )
    else:
        logging.warning("BaSiCPy venv not found at %s: tilefuse only", args.basicpy)
    print("| run | flat-field RMS error | fit seconds | peak RSS MB |")
    print("|---|---|---|---|")
    for name, (cmd, out) in runs.items():
        r = run_measured(cmd, env={"PYTHONPATH": str(ROOT / "src")})
        err = rms_error(np.load(args.data / out), truth)
        print(f"| {name} | {err * 100:.2f} % | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
