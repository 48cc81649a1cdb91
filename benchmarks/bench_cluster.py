"""Scale-out: the dask.distributed path against threads, on lazily generated tiles.

    python benchmarks/bench_cluster.py fusion   [--shape 64 2048 2048] [--repeats 3]
    python benchmarks/bench_cluster.py client   [--items 1000 10000 100000]
    python benchmarks/bench_cluster.py labels
    python benchmarks/bench_cluster.py register [--grids 20 40]
    python benchmarks/bench_cluster.py big      [--gb 20]

Tiles are `tilefuse.synthetic.SampleTile`s: regions of one `SyntheticSample`
generated on read (no tile files), so the output is known and any size fits.
The cluster is a `LocalCluster` of 2 worker processes x 1 thread (the box has 2
cores); threads means `workers=2`. Each part prints a Markdown table.

- fusion: one 4 x 4 mosaic fused three ways (threads; cluster; cluster with dask's
  default ``MALLOC_TRIM_THRESHOLD_`` left in force, i.e. without tilefuse's allocator
  tuning); wall time and whether the stores are byte-identical.
- client: `imap_unordered` of a trivial task over N items on a CLI-started scheduler
  and 2 workers; the client's peak traced Python memory (tracemalloc; the scheduler
  runs in its own process) and time per item.
- labels: `fuse_labels` on the cluster of a 3 x 3 label mosaic with small IDs and
  with every ID shifted past 3e9; peak RSS of the workers (a fresh cluster each).
- register: pairwise registration of G x G 2D tiles (128 x 128, 20 % overlap,
  jittered nominal positions, each tile with its own camera noise of about 7 % of the
  range) serial vs 2 threads vs cluster, and the RMS error of the registered positions
  (voxels, after removing the common translation).
- big: a >= 20 GB fusion through the cluster path in a child process; peak RSS of
  the whole process tree (client + scheduler + workers), sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tilefuse import Tileset
from tilefuse.geometry import affine_from_offset
from tilefuse.synthetic import SampleTile, SyntheticSample
from tilefuse.tile import Tile


def mosaic(shape, grid=(4, 4), overlap=0.1, kind="image", label_offset=0, n_blobs=None, seed=0):
    """A grid of lazily generated tiles covering a sample of ``shape`` (z, y, x)."""
    sample = SyntheticSample(shape, seed=seed, n_blobs=n_blobs, blob_radius=4)
    ny, nx = grid
    ty = int(np.ceil(shape[1] / (ny - (ny - 1) * overlap)))
    tx = int(np.ceil(shape[2] / (nx - (nx - 1) * overlap)))
    tiles = []
    for r in range(ny):
        for c in range(nx):
            y0 = min(round(r * ty * (1 - overlap)), shape[1] - ty)
            x0 = min(round(c * tx * (1 - overlap)), shape[2] - tx)
            src = SampleTile(sample, (0, y0, x0), (shape[0], ty, tx), kind=kind,
                             label_offset=label_offset)  # fmt: skip
            tiles.append(Tile(src, affine_from_offset((1, 1, 1), (0, y0, x0)), index=len(tiles)))
    return Tileset(tiles), sample


def store_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in ("zarr.json", ".zattrs", ".zarray", ".zgroup")
        and not p.name.startswith(".tilefuse")
    }  # fmt: skip


@contextlib.contextmanager
def local_cluster(n_workers=2, tune=True):
    import distributed

    import tilefuse.parallel as par

    saved = par.tune_cluster
    if not tune:
        par.tune_cluster = lambda client: None
    try:
        with (
            distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,  # fmt: skip
            distributed.Client(cluster) as client,
        ):
            yield client
    finally:
        par.tune_cluster = saved


@contextlib.contextmanager
def cli_cluster(n_workers=2):
    """A scheduler and workers in their own processes (``dask scheduler`` / ``dask worker``)."""
    import shutil
    import socket
    import subprocess

    import distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask_cli = shutil.which("dask")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]  # fmt: skip
    procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", str(n_workers),
                                   "--nthreads", "1", "--no-dashboard"], **quiet))  # fmt: skip
    try:
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=120)
            yield client
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def worker_peak_mb(client) -> float:
    import resource

    peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return max(peaks.values()) / 1024


def part_fusion(args, tmp: Path) -> None:
    ts, _ = mosaic(tuple(args.shape), n_blobs=500)
    rows = []
    kw = {"blend": "linear", "levels": 2}
    import shutil

    def best(run, path: Path) -> float:
        """Fastest of ``--repeats`` runs (each into a fresh store)."""
        times = []
        for _ in range(args.repeats):
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            run(path)
            times.append(time.perf_counter() - t0)
        return min(times)

    sec = best(lambda p: ts.fuse(p, workers=2, **kw), tmp / "threads.ome.zarr")
    rows.append(("threads (2)", sec, "threads.ome.zarr"))
    for tune, name in ((True, "cluster"), (False, "cluster, MALLOC_TRIM_THRESHOLD_=65536")):
        with local_cluster(tune=tune) as client:
            path = tmp / f"{name[:7]}{tune}.ome.zarr"
            sec = best(lambda p, c=client: ts.fuse(p, client=c, **kw), path)
            rows.append((name, sec, path.name))
    ref = store_bytes(tmp / rows[0][2])
    mb = np.prod(args.shape) * 2 / 1e6
    print(f"\nfusion of {tuple(args.shape)} uint16 ({mb:.0f} MB), 4 x 4 lazy tiles, 2 levels, "
          f"best of {args.repeats}\n")  # fmt: skip
    print("| run | seconds | MB/s | vs threads | byte-identical to threads |")
    print("|---|---|---|---|---|")
    for name, sec, path in rows:
        same = store_bytes(tmp / path) == ref
        print(f"| {name} | {sec:.1f} | {mb / sec:.0f} | {sec / rows[0][1]:.2f}x | {same} |")


def _trivial(i: int) -> int:
    return i + 1


def part_client(args, tmp: Path) -> None:
    from tilefuse.parallel import imap_unordered

    print("\n| items | seconds | us per item | client peak traced MB |")
    print("|---|---|---|---|")
    with cli_cluster() as client:  # the scheduler in its own process: the client alone is traced
        for n in args.items:
            tracemalloc.start()
            t0 = time.perf_counter()
            total = sum(r for _, r in imap_unordered(_trivial, range(n), client=client))
            sec = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            assert total == n * (n + 1) // 2
            print(f"| {n} | {sec:.1f} | {sec / n * 1e6:.0f} | {peak:.1f} |")


def part_labels(args, tmp: Path) -> None:
    print("\n| label IDs | objects | worker peak RSS MB | fuse_labels seconds |")
    print("|---|---|---|---|")
    base = None
    for offset in (0, 3_000_000_000):
        ts, sample = mosaic((16, 600, 600), grid=(3, 3), overlap=0.15, kind="labels",
                            label_offset=offset, seed=1)  # fmt: skip
        mapping = ts.dedup_labels()
        with local_cluster() as client:
            t0 = time.perf_counter()
            fused = ts.fuse_labels(tmp / f"l{offset}.ome.zarr", mapping=mapping, client=client)
            sec = time.perf_counter() - t0
            peak = worker_peak_mb(client)
        assert mapping.n_objects == sample.n_objects, (mapping.n_objects, sample.n_objects)
        del fused
        base = base or peak
        ids = "1 .. n" if not offset else f"{offset} + (1 .. n)"
        print(f"| {ids} | {mapping.n_objects} | {peak:.0f} ({peak / base:.2f}x) | {sec:.1f} |")


class NoisyTile(SampleTile):
    """A sample tile with its own camera noise (deterministic per voxel, different per tile)."""

    def __init__(self, *a, seed: int = 0, amplitude: float = 0.0, **kw) -> None:
        super().__init__(*a, **kw)
        self.noise = (
            np.random.default_rng(seed).normal(0, amplitude, (1, 61, 67)).astype(np.float32)
        )

    def _read(self, region):
        data = super()._read(region).astype(np.float32)
        z, y, x = (np.arange(s.start, s.stop) for s in region)
        data += self.noise[np.ix_(z % 1, y % 61, x % 67)][None]
        return np.clip(data, 0, 65535).astype(self._dtype)


def part_register(args, tmp: Path) -> None:
    print("\n| tiles | links | serial s | 2 threads s | cluster s | link error RMS (voxels) "
          "| RMS error (voxels) | plain least squares, expected (voxels) | error / expected |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for g in args.grids:
        tile, step = 128, 102  # 20 % overlap
        shape = (1, step * (g - 1) + tile + 8, step * (g - 1) + tile + 8)
        sample = SyntheticSample(shape, seed=5, blob_radius=3, n_blobs=g * g * 40)
        rng = np.random.default_rng(g)
        tiles, truth = [], []
        for r in range(g):
            for c in range(g):
                start = (0, r * step + int(rng.integers(0, 8)), c * step + int(rng.integers(0, 8)))
                nominal = (0, r * step + 4, c * step + 4)  # the stage's grid, off by up to 4 px
                src = NoisyTile(sample, start, (1, tile, tile), seed=len(tiles), amplitude=4000.0)
                tiles.append(Tile(src, affine_from_offset((1, 1, 1), nominal), index=len(tiles)))
                truth.append(start)
        ts, truth = Tileset(tiles), np.array(truth, float)
        times = []
        for mode in ("serial", "threads", "cluster"):
            t0 = time.perf_counter()
            if mode == "cluster":
                with local_cluster() as client:
                    t0 = time.perf_counter()
                    reg, report = ts.register(client=client)
            else:
                reg, report = ts.register(workers=1 if mode == "serial" else 2)
            times.append(time.perf_counter() - t0)
        err = (reg.offsets - truth) - (reg.offsets - truth).mean(0)
        rms = float(np.sqrt((err**2).sum(1).mean()))
        link_rms, bound = _ls_bound(report, ts, truth)
        s, t, c = times
        print(f"| {g * g} | {len(report.links)} | {s:.1f} | {t:.1f} ({s / t:.2f}x) "
              f"| {c:.1f} ({s / c:.2f}x) | {link_rms:.3f} | {rms:.3f} | {bound:.3f} "
              f"| {rms / bound:.2f} |")  # fmt: skip


def _ls_bound(report, ts, truth) -> tuple[float, float]:
    """The link errors' RMS, and the RMS error plain least squares is expected to reach.

    With independent link errors of variance s^2 per axis, the unweighted
    least-squares placement of a link graph has covariance s^2 L^+ (L the
    graph Laplacian): an expected RMS error (after removing the common
    translation) of sqrt(sum over axes of s_a^2 * trace(L^+) / n). Weighting
    links by their quality (as `register` does) beats it by a constant factor,
    but on a 2D grid trace(L^+) / n grows like log n whatever the weights:
    larger mosaics end less accurate at the same link quality.
    """
    nominal = np.array([t.offset for t in ts.tiles])
    kept = [k for k in report.links if k.kept]
    i = np.array([k.i for k in kept])
    j = np.array([k.j for k in kept])
    want = (truth[j] - nominal[j]) - (truth[i] - nominal[i])
    got = np.array([k.shift_um for k in kept])
    var = ((got - want) ** 2).mean(0)  # per axis
    n = len(ts.tiles)
    lap = np.zeros((n, n))
    np.add.at(lap, (i, i), 1.0)
    np.add.at(lap, (j, j), 1.0)
    np.add.at(lap, (i, j), -1.0)
    np.add.at(lap, (j, i), -1.0)
    trace = float(np.trace(np.linalg.pinv(lap, hermitian=True)))
    return float(np.sqrt(var.sum())), float(np.sqrt(var.sum() * trace / n))


def _big_child(gb: float, out: str) -> None:
    side = int(np.sqrt(gb * 1e9 / 2 / 128))
    ts, _ = mosaic((128, side, side), grid=(8, 8), overlap=0.1, n_blobs=2000)
    import os
    import resource

    with local_cluster(tune=os.environ.get("BENCH_TUNE", "1") == "1") as client:
        t0 = time.perf_counter()
        g = ts.fuse(out, client=client, blend="linear", levels=1)
        sec = time.perf_counter() - t0
        workers = worker_peak_mb(client)
    client_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nbytes = int(np.prod(g[0].shape)) * 2
    print(json.dumps({"gb": nbytes / 1e9, "seconds": sec, "shape": list(g[0].shape),
                      "worker_peak_mb": workers, "client_peak_mb": client_mb}))  # fmt: skip


def part_big(args, tmp: Path) -> None:
    from _measure import run_measured

    out = tmp / "big.ome.zarr"
    cmd = [sys.executable, __file__, "_big", "--gb", str(args.gb), "--out", str(out)]
    info = run_measured(cmd, timeout=7200)
    print("\n| output GB | shape | seconds | MB/s | peak RSS MB: process tree | one worker "
          "| client (+ scheduler) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| {info['gb']:.1f} | {tuple(info['shape'])} | {info['seconds']:.0f} "
          f"| {info['gb'] * 1e3 / info['seconds']:.0f} | {info['peak_rss_mb']:.0f} "
          f"| {info['worker_peak_mb']:.0f} | {info['client_peak_mb']:.0f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["fusion", "client", "labels", "register", "big", "_big"])
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 2048, 2048])
    ap.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--grids", type=int, nargs="+", default=[20, 40])
    ap.add_argument("--gb", type=float, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="fusion: best of this many runs")
    ap.add_argument("--out")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.part == "_big":
        _big_child(args.gb, args.out)
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        {"fusion": part_fusion, "client": part_client, "labels": part_labels,
         "register": part_register, "big": part_big}[args.part](args, Path(tmp))  # fmt: skip


if __name__ == "__main__":
    main()
