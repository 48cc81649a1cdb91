"""BigStitcher image containers: BDV-N5 (TensorStore) vs BDV-HDF5 (h5py), written and read by tilefuse.

    python benchmarks/bench_bdv_n5.py [--tiles 4] [--shape 64 512 512] [--repeats 3]

For a set of uint16 tiles (a synthetic microscopy-like volume cut into tiles),
per container: seconds to export every tile with `Tileset.to_bdv` (all pyramid
levels BigDataViewer proposes, gzip level 4, chunks (32, 128, 128)), bytes on
disk, number of files, and seconds to read every tile back at level 0 through
`Tileset.open(xml)` (tilefuse's lazy sources: `BdvSource` / `BdvN5Source`) in
(32, 256, 256) regions. Best of --repeats rounds; each round runs both
containers, so a load spike hits both alike. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from tilefuse import Tileset
from tilefuse.synthetic import make_volume


def _read_all(tiles: Tileset, block=(32, 256, 256)) -> int:
    total = 0
    for t in tiles:
        _, nz, ny, nx = t.source.shape
        for z, y, x in itertools.product(
            range(0, nz, block[0]), range(0, ny, block[1]), range(0, nx, block[2])
        ):
            region = (slice(z, z + block[0]), slice(y, y + block[1]), slice(x, x + block[2]))
            total += t.source.read(region).nbytes
    return total


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    z, y, x = args.shape
    vol = make_volume((z, y, x * args.tiles), seed=0, n_blobs=200)[0]
    tiles = [vol[:, :, k * x : (k + 1) * x] for k in range(args.tiles)]
    ts = Tileset.from_arrays(
        tiles, [(0.0, 0.0, k * x * 0.2) for k in range(args.tiles)], (1, 0.2, 0.2)
    )
    mb = sum(t.nbytes for t in tiles) / 1e6
    best: dict[str, dict[str, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_bdv_n5_"))
    try:
        for _ in range(args.repeats):
            for fmt, name in (("hdf5", "tiles.h5"), ("n5", "tiles.n5")):
                out = work / name
                t0 = time.perf_counter()
                _, xml = ts.to_bdv(out, format=fmt, chunks=(32, 128, 128), overwrite=True)
                t_write = time.perf_counter() - t0
                back = Tileset.open(xml)
                t0 = time.perf_counter()
                n = _read_all(back)
                t_read = time.perf_counter() - t0
                assert n == sum(t.nbytes for t in tiles)
                for t, want in zip(back, tiles, strict=True):
                    assert np.array_equal(t.source.read((slice(0, 4),) * 3)[0], want[:4, :4, :4])
                size, files = _size(out)
                cur = best.setdefault(fmt, {"write": 1e9, "read": 1e9})
                cur.update(
                    write=min(cur["write"], t_write),
                    read=min(cur["read"], t_read),
                    size=size,
                    files=files,
                )
                print(f"{fmt}: write {t_write:.2f} s, read {t_read:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.tiles} tiles of {tuple(args.shape)} uint16 ({mb:.0f} MB); best of {args.repeats}; "
        f"Python {platform.python_version()}, h5py {version('h5py')}, "
        f"tensorstore {version('tensorstore')}\n"
    )
    print("| container | export s (MB/s) | read level 0 s (MB/s) | on disk MB | files |")
    print("|---|---:|---:|---:|---:|")
    for fmt, r in best.items():
        print(
            f"| {fmt} | {r['write']:.2f} ({mb / r['write']:.0f}) | {r['read']:.2f} "
            f"({mb / r['read']:.0f}) | {r['size'] / 1e6:.0f} | {r['files']:.0f} |"
        )


if __name__ == "__main__":
    main()
