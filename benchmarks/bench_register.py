"""Registration accuracy and speed: tilefuse vs multiview-stitcher on a jittered mosaic.

    python benchmarks/bench_register.py

Data (made once, in /tmp/tilefuse-bench/register): a 3 x 3 grid of float32
tiles of shape (32, 200, 220), sampled with ``scipy.ndimage.map_coordinates``
(order 3) from ``tilefuse.synthetic.make_volume((32, 500, 560), seed=3,
blob_radius=4)`` at true positions (0, 10 + r*150 + u, 10 + c*170 + v), u, v
uniform in [-0.5, 0.5]; nominal positions = round(true) + integer jitter in
[-4, 4] in y and x (~25-30 % overlap). Voxel size 1 um.

Both tools start from the nominal positions and register with pairwise phase
correlation plus global optimisation, default parameters:

- tilefuse: ``Tileset.from_arrays(tiles, nominal).register()`` (worker below,
  ``--worker tilefuse --data DIR``);
- multiview-stitcher: ``benchmarks/peers/mvs_register.py`` in /work/peers-venv.

Each runs in its own subprocess (``run_measured``), twice; best time (the
tool's own timer around building the tiles + registration, tiles already in
memory), max peak RSS of the process tree. Error: registered minus true
position per tile, minus its mean over the tiles (positions are defined up to
a common translation); RMS and max of its length, in voxels. Prints a Markdown
table.
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

from _measure import ROOT, peers_python, run_measured

DATA = Path("/tmp/tilefuse-bench/register")
TILE = (32, 200, 220)
VOLUME = (32, 500, 560)
STEP = (150, 170)
REPEAT = 2


def make_data(folder: Path, seed: int = 0) -> None:
    from scipy import ndimage

    from tilefuse.synthetic import make_volume

    folder.mkdir(parents=True, exist_ok=True)
    vol, _ = make_volume(VOLUME, seed=3, blob_radius=4)
    vol = vol.astype(np.float32)
    coords = np.indices(TILE).astype(float)
    rng = np.random.default_rng(seed)
    true = []
    for r in range(3):
        for c in range(3):
            o = np.array(
                [
                    0.0,
                    10 + r * STEP[0] + rng.uniform(-0.5, 0.5),
                    10 + c * STEP[1] + rng.uniform(-0.5, 0.5),
                ]
            )
            t = ndimage.map_coordinates(vol, coords + o.reshape(3, 1, 1, 1), order=3)
            np.save(folder / f"tile_{len(true):03d}.npy", t.astype(np.float32))
            true.append(o)
    true_a = np.array(true)
    nominal = np.round(true_a) + np.c_[np.zeros(9), rng.integers(-4, 5, (9, 2))]
    (folder / "positions.json").write_text(
        json.dumps(
            {
                "voxel_size": [1.0, 1.0, 1.0],
                "nominal_um": nominal.tolist(),
                "true_um": true_a.tolist(),
            }
        )
    )


def worker_tilefuse(folder: Path) -> None:
    import tilefuse
    from tilefuse import Tileset

    pos = json.loads((folder / "positions.json").read_text())
    arrays = [np.load(folder / f"tile_{i:03d}.npy") for i in range(len(pos["nominal_um"]))]
    t0 = time.perf_counter()
    ts = Tileset.from_arrays(arrays, pos["nominal_um"], pos["voxel_size"])
    reg, _report = ts.register()
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tool": "tilefuse",
                "version": tilefuse.__version__,
                "seconds": round(seconds, 3),
                "positions_um": np.asarray(reg.offsets).tolist(),
            }
        )
    )


def errors_vox(positions: np.ndarray, true: np.ndarray, voxel_size: np.ndarray) -> np.ndarray:
    d = (positions - true) / voxel_size
    d -= d.mean(axis=0)
    return np.sqrt((d**2).sum(axis=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("tilefuse",))
    p.add_argument("--data", type=Path, default=DATA)
    args = p.parse_args()
    if args.worker == "tilefuse":
        worker_tilefuse(args.data)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if not (args.data / "positions.json").exists():
        make_data(args.data)
    pos = json.loads((args.data / "positions.json").read_text())
    true = np.array(pos["true_um"])
    nominal = np.array(pos["nominal_um"])
    vs = np.array(pos["voxel_size"])

    cmds = {
        "tilefuse": [sys.executable, __file__, "--worker", "tilefuse", "--data", args.data],
        "multiview-stitcher": [
            peers_python(),
            ROOT / "benchmarks" / "peers" / "mvs_register.py",
            "--data",
            args.data,
        ],
    }
    rows = {}
    for tool, cmd in cmds.items():
        runs = [run_measured(cmd) for _ in range(REPEAT)]
        err = errors_vox(np.array(runs[-1]["positions_um"]), true, vs)
        rows[tool] = {
            "version": runs[-1]["version"],
            "seconds": min(r["seconds"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "rms_vox": float(np.sqrt((err**2).mean())),
            "max_vox": float(err.max()),
        }

    nom = errors_vox(nominal, true, vs)
    print(
        f"\n3 x 3 tiles {TILE}, nominal positions: RMS error {np.sqrt((nom**2).mean()):.2f}, max {nom.max():.2f} voxels\n"
    )
    print("| tool | seconds | peak RSS MB | RMS error (voxels) | max error (voxels) |")
    print("|---|---:|---:|---:|---:|")
    for tool, r in rows.items():
        print(
            f"| {tool} {r['version']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {r['rms_vox']:.3f} | {r['max_vox']:.3f} |"
        )
    ratio = rows["multiview-stitcher"]["seconds"] / rows["tilefuse"]["seconds"]
    print(f"\nmultiview-stitcher / tilefuse time: {ratio:.1f}x")


if __name__ == "__main__":
    main()
