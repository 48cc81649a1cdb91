"""Sub-voxel registration accuracy of tilefuse on jittered mosaics (5 seeds).

    python benchmarks/bench_register_accuracy.py

Data: ``bench_register.make_data`` with seeds 0..4 (seed 0 is the data of
``bench_register.py``), made once under /tmp/tilefuse-bench/register-accuracy:
3 x 3 float32 tiles (32, 200, 220) sampled (cubic) from one volume at true
positions with uniform sub-voxel parts, nominal positions rounded and jittered
by up to 4 voxels. Each mosaic is registered with ``Tileset.register()``
(defaults). Prints per seed: RMS and max position error (voxels, after removing
the mean offset), the number of links whose sub-voxel part sits exactly on
+-0.5 (a clipped refinement), the largest link error against the truth (links
over 5000 voxels), and the mean RMS over the seeds. Accuracy only: no timing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_register as br

DATA = Path("/tmp/tilefuse-bench/register-accuracy")


def main() -> None:
    from tilefuse import Tileset

    rms_all = []
    print("| seed | RMS error (voxels) | max error (voxels) | links on +-0.5 | max link error |")
    print("|---:|---:|---:|---:|---:|")
    for seed in range(5):
        folder = DATA / f"seed{seed}"
        if not (folder / "positions.json").exists():
            br.make_data(folder, seed=seed)
        pos = json.loads((folder / "positions.json").read_text())
        n = len(pos["nominal_um"])
        arrays = [np.load(folder / f"tile_{i:03d}.npy") for i in range(n)]
        true, nominal = np.array(pos["true_um"]), np.array(pos["nominal_um"])
        reg, report = Tileset.from_arrays(arrays, nominal, pos["voxel_size"]).register()
        err = br.errors_vox(np.asarray(reg.offsets), true, np.asarray(pos["voxel_size"]))
        on_half, link_err = 0, []
        for k in report.links:
            if k.overlap_voxels < 5000:
                continue
            truth = (true[k.j] - true[k.i]) - (nominal[k.j] - nominal[k.i])
            link_err.append(float(np.abs(k.shift_um - truth).max()))
            frac = np.abs(k.shift_um - np.round(k.shift_um))
            on_half += int(np.any(np.isclose(frac, 0.5, atol=1e-9)))
        rms = float(np.sqrt((err**2).mean()))
        rms_all.append(rms)
        print(f"| {seed} | {rms:.4f} | {err.max():.4f} | {on_half} | {max(link_err):.3f} |")
    print(f"\nmean RMS over seeds: {np.mean(rms_all):.4f} voxels")


if __name__ == "__main__":
    main()
