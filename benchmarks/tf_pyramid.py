"""tilefuse side of the pyramid benchmark (same CLI as peers/pyramid_omezarr.py).

    python tf_pyramid.py --input ARRAY.npy --out OUT.ome.zarr --levels 3 --chunks CZ CY CX
        [--shards SZ SY SX] [--factors FZ FY FX] [--compression default|fast|archive]

Writes the (z, y, x) .npy array (read region by region, see `NpyRegions`) as level 0 of a `MultiScaleGroup`
block by block (each block one shard), then the downsampled levels (mean),
each computed block-wise from the level above. Prints one JSON line.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import tilefuse
from tilefuse import MultiScaleGroup


class NpyRegions:
    """A .npy file read region by region through a short-lived memmap.

    The same practice as tilefuse's TIFF reader: mapped pages are released
    after each read, so resident memory does not grow to the input size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        mm = np.load(path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = mm.shape, mm.dtype, mm.ndim
        del mm

    def __getitem__(self, index):
        mm = np.load(self.path, mmap_mode="r")
        try:
            return np.array(mm[index])
        finally:
            del mm


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--chunks", required=True, type=int, nargs=3)
    p.add_argument("--shards", type=int, nargs=3, default=None)
    p.add_argument("--factors", type=int, nargs=3, default=None)
    p.add_argument("--compression", default="default")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    t0 = time.perf_counter()
    data = NpyRegions(args.input)
    g = MultiScaleGroup.create(
        args.out,
        shape=data.shape,
        dtype=data.dtype,
        chunks=tuple(args.chunks),
        shards=tuple(args.shards) if args.shards else False,
        compression=args.compression,
        overwrite=True,
    )
    g.write_array(data, workers=args.workers)
    g.build_pyramid(args.levels, factors=args.factors, workers=args.workers)
    g.mark_complete()
    seconds = time.perf_counter() - t0
    sys.stdout.write(
        json.dumps(
            {
                "tool": "tilefuse",
                "version": tilefuse.__version__,
                "seconds": round(seconds, 3),
                "levels": [list(a.shape) for a in g.levels],
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
