"""tilefuse side of the fusion benchmark (same CLI as peers/mvs_fuse.py).

    python tf_fuse.py --tiles DIR --out OUT.ome.zarr --chunks CZ CY CX [--shards SZ SY SX]

Reads DIR/tile_NNN.tif and DIR/positions.json, fuses with linear blending into
OME-Zarr (level 0 only), and prints one JSON line.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import tilefuse
from tilefuse import Tileset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiles", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--chunks", required=True, type=int, nargs=3)
    p.add_argument("--shards", type=int, nargs=3, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--compression", default="default")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    t0 = time.perf_counter()
    pos = json.loads((args.tiles / "positions.json").read_text())
    files = [args.tiles / f"tile_{i:03d}.tif" for i in range(len(pos["offsets_um"]))]
    ts = Tileset.from_tiff(files, pos["offsets_um"], voxel_size=pos["voxel_size"])
    g = ts.fuse(
        args.out,
        blend="linear",
        chunks=tuple(args.chunks),
        shards=tuple(args.shards) if args.shards else False,
        workers=args.workers,
        compression=args.compression,
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    shape = [int(s) for s in g[0].shape]
    sys.stdout.write(
        json.dumps(
            {
                "tool": "tilefuse",
                "version": tilefuse.__version__,
                "seconds": round(seconds, 3),
                "out_shape": shape,
                "out_bytes": int(np.prod(shape)) * g[0].dtype.itemsize,
                "sharded": bool(args.shards),
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
