"""BDV-HDF5 export benchmark: tilefuse ``Tileset.to_bdv`` vs npy2bdv, same tiles.

    python benchmarks/bench_bdv.py [--workdir /tmp/tilefuse-bench/bdv] [--repeats 2]

Data: 16 uint16 tiles of (64, 512, 512) (a 4 x 4 grid, 10 % overlap, voxel
(1.0, 0.25, 0.25) um; 537 MB in all), made once, deterministically (smooth random
background + bright boxes + noise, values up to ~41000), saved as one .npy each
plus positions.json in the workdir (reused when present).

Runs, each a fresh subprocess of this file (``--worker NAME``), measured with
``_measure.run_measured`` (peak RSS of the process tree):

1. npy2bdv: ``BdvWriter(h5, subsamp=((1, 1, 1),), ntiles=16, compression="gzip")``
   (default blockdim (4, 256, 256)); each tile ``np.load``-ed whole, then
   ``append_view(stack, time=0, tile=i, m_affine=<translation>, ...)``;
   ``write_xml()``; ``close()``.
2. tilefuse: ``Tileset.from_arrays(<np.load mmap_mode="r">, offsets_um,
   voxel).to_bdv(h5, levels=1)`` (reads block by block).
3. tilefuse, ``levels=4`` (capped at what BigDataViewer's ProposeMipmaps gives).
4. extra: tilefuse, ``levels=1, chunks=(4, 256, 256)`` (npy2bdv's default blockdim;
   tilefuse's default is BDV's proposal, (4, 32, 32) here).

Seconds: from loading to files written, inside the worker. After each run the
driver reads level 0 of tiles 0 and 15 back with h5py (int16 viewed as uint16)
and compares with the source. Best time and highest peak RSS over ``--repeats``
are kept. "peak RSS" is _measure's (it counts the np.load(mmap_mode="r") pages
tilefuse touches: reclaimable page cache); "peak anon" is the highest RssAnon
(heap) the worker saw, sampled every 20 ms in-process. Results: a Markdown
table on stdout and <workdir>/bdv.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np

GRID, SHAPE, OVERLAP, VOXEL = 4, (64, 512, 512), 0.10, (1.0, 0.25, 0.25)
CHECK_TILES = (0, GRID * GRID - 1)
log = logging.getLogger("bench")


def tile_path(wd: Path, i: int) -> Path:
    return wd / f"tile_{i:02d}.npy"


def make_tile(i: int) -> np.ndarray:
    """Smooth background (1000-8000) + 6 bright boxes (at 28000-40000) + noise; uint16."""
    from scipy import ndimage

    rng = np.random.default_rng(1000 + i)
    low = rng.uniform(1000, 8000, (4, 8, 8)).astype(np.float32)
    t = ndimage.zoom(low, [s // n for s, n in zip(SHAPE, low.shape, strict=True)], order=1)
    for _ in range(6):
        z, y, x = (int(rng.integers(0, s - s // 4)) for s in SHAPE)
        box = t[z : z + SHAPE[0] // 8, y : y + 48, x : x + 48]
        np.maximum(box, rng.uniform(28000, 40000), out=box)
    t += rng.normal(0, 150, SHAPE).astype(np.float32)
    return np.clip(t, 0, 65535).astype(np.uint16)


def make_data(wd: Path) -> None:
    pos_file = wd / "positions.json"
    n = GRID * GRID
    if pos_file.exists() and all(tile_path(wd, i).exists() for i in range(n)):
        log.info("reusing tiles in %s", wd)
        return
    wd.mkdir(parents=True, exist_ok=True)
    step = int(SHAPE[1] * (1 - OVERLAP))
    offsets = [
        [0.0, r * step * VOXEL[1], c * step * VOXEL[2]] for r in range(GRID) for c in range(GRID)
    ]
    for i in range(n):
        t = make_tile(i)
        assert t.max() > 32767, "want uint16 values above the int16 range"
        np.save(tile_path(wd, i), t)
    pos_file.write_text(json.dumps({"voxel_size": VOXEL, "offsets_um": offsets}))


def worker_npy2bdv(wd: Path, out: Path, levels: int, chunks: list[int] | None) -> dict:
    import npy2bdv

    pos = json.loads((wd / "positions.json").read_text())
    vz, vy, vx = pos["voxel_size"]
    t0 = time.perf_counter()
    w = npy2bdv.BdvWriter(
        str(out), subsamp=((1, 1, 1),), ntiles=len(pos["offsets_um"]), compression="gzip"
    )
    nbytes = 0
    for i, (oz, oy, ox) in enumerate(pos["offsets_um"]):
        stack = np.load(tile_path(wd, i), mmap_mode=None)
        nbytes += stack.nbytes
        # world unit = one x pixel (calibration scales y, z); translation in those units
        aff = np.array([[1, 0, 0, ox / vx], [0, 1, 0, oy / vx], [0, 0, 1, oz / vx]], dtype=float)
        w.append_view(
            stack, time=0, tile=i, m_affine=aff, name_affine="tile position",
            voxel_size_xyz=(vx, vy, vz), voxel_units="um", calibration=(1, vy / vx, vz / vx),
        )  # fmt: skip
    w.write_xml()
    w.close()
    return {"seconds": time.perf_counter() - t0, "level0_bytes": nbytes}


def worker_tilefuse(wd: Path, out: Path, levels: int, chunks: list[int] | None) -> dict:
    from tilefuse import Tileset

    pos = json.loads((wd / "positions.json").read_text())
    t0 = time.perf_counter()
    arrays = [np.load(tile_path(wd, i), mmap_mode="r") for i in range(len(pos["offsets_um"]))]
    ts = Tileset.from_arrays(arrays, pos["offsets_um"], pos["voxel_size"])
    ts.to_bdv(out, levels=levels, **({"chunks": tuple(chunks)} if chunks else {}))
    return {"seconds": time.perf_counter() - t0, "level0_bytes": sum(a.nbytes for a in arrays)}


WORKERS = {"npy2bdv": worker_npy2bdv, "tilefuse": worker_tilefuse}


def sample_anon(peak: list[int], stop: threading.Event) -> None:
    """Keep the highest RssAnon (kB) of this process in ``peak[0]``."""
    while not stop.wait(0.02):
        with open("/proc/self/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("RssAnon:"))
        peak[0] = max(peak[0], kb)


def check(out: Path, wd: Path) -> tuple[bool, int, tuple]:
    """Level 0 of CHECK_TILES equals the source tiles; also levels written, level-0 chunks."""
    import h5py

    with h5py.File(out, "r") as f:
        cells = {i: f[f"t00000/s{i:02d}/0/cells"][...].view(np.uint16) for i in CHECK_TILES}
        ok = all(np.array_equal(a, np.load(tile_path(wd, i))) for i, a in cells.items())
        return ok, len(f["s00/resolutions"]), f["t00000/s00/0/cells"].chunks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse-bench/bdv"))
    p.add_argument("--repeats", type=int, default=2, help="runs per tool; best time is kept")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--levels", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--chunks", type=int, nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    wd = args.workdir
    if args.worker:
        peak, stop = [0], threading.Event()
        threading.Thread(target=sample_anon, args=(peak, stop), daemon=True).start()
        r = WORKERS[args.worker](wd, args.out, args.levels, args.chunks)
        stop.set()
        r.update(file_bytes=args.out.stat().st_size, peak_anon_mb=round(peak[0] / 1024, 1))
        sys.stdout.write(json.dumps(r) + "\n")
        return

    from _measure import run_measured

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    make_data(wd)
    runs = [("npy2bdv", 1, []), ("tilefuse", 1, []), ("tilefuse", 4, []), ("tilefuse", 1, [4, 256, 256])]  # fmt: skip
    results = []
    for tool, levels, chunks in runs:
        out = wd / f"{tool}_L{levels}{'_c' if chunks else ''}.h5"
        reps, correct = [], True
        for _ in range(args.repeats):
            for f in (out, out.with_suffix(".xml")):
                f.unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--worker", tool, "--workdir", wd, "--out", out]
            extra = ["--chunks", *chunks] if chunks else []
            reps.append(run_measured([*cmd, "--levels", levels, *extra]))
            ok, written, chunks0 = check(out, wd)
            correct &= ok
        best = min(reps, key=lambda x: x["seconds"])
        mb = best["level0_bytes"] / 1e6
        results.append(
            {
                "tool": tool, "levels": levels, "levels_written": written, "chunks": chunks0,
                "seconds": round(best["seconds"], 2), "seconds_all": [round(x["seconds"], 2) for x in reps],
                "mb_per_s": round(mb / best["seconds"], 1), "level0_mb": round(mb, 1),
                "peak_rss_mb": max(x["peak_rss_mb"] for x in reps),
                "peak_anon_mb": max(x["peak_anon_mb"] for x in reps),
                "file_mb": round(best["file_bytes"] / 1e6, 1), "correct": correct,
            }
        )  # fmt: skip
    (wd / "bdv.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| tool | levels | level-0 chunks | seconds | MB/s | peak RSS MB | peak anon MB | file MB | correct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lv, lw = r["levels"], r["levels_written"]
        lv = f"{lv}" if lv == lw else f"{lv} ({lw} written)"
        lines.append(
            f"| {r['tool']} | {lv} | {'x'.join(map(str, r['chunks']))} | {r['seconds']:.2f} "
            f"| {r['mb_per_s']} | {r['peak_rss_mb']} | {r['peak_anon_mb']} | {r['file_mb']} "
            f"| {'yes' if r['correct'] else 'NO'} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
