"""Peer benchmark: OME-Zarr pyramid writing with ome-zarr-py (ome_zarr.writer.write_image).

Measures wall time from opening the input .npy (memory-mapped) to the whole
pyramid (all levels + metadata) being written.

    python pyramid_omezarr.py --input ARRAY.npy --out OUT.ome.zarr --levels 3 --chunks CZ CY CX

The (z, y, x) array is handed to ``write_image`` as the np.memmap, as a user
would. ome-zarr-py 0.18 defaults are used: NGFF 0.5 / zarr format 3, default
compressor (zarr's default, zstd), ``method=Methods.RESIZE`` (skimage
``resize``, order 1, anti-aliasing). Integer ``scale_factors`` (2, 4, ...) are
passed for the ``--levels - 1`` downsampled levels: ome-zarr-py halves y and x
per level and does NOT downsample z. Storage chunks are set with
``storage_options={"chunks": (CZ, CY, CX)}`` (no sharding). Arrays are s0, s1, ...

Prints one JSON line on stdout: tool, version, seconds, levels (shape per level),
peak_rss_mb.
"""

import argparse
import contextlib
import json
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import ome_zarr
import zarr
from ome_zarr.writer import write_image

log = logging.getLogger("pyramid_omezarr")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--chunks", required=True, type=int, nargs=3, metavar=("CZ", "CY", "CX"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")

    if args.out.exists():
        shutil.rmtree(args.out)
    scale_factors = [2**i for i in range(1, args.levels)]

    t0 = time.perf_counter()
    arr = np.load(args.input, mmap_mode="r")
    log.info("input %s %s, scale_factors %s", arr.shape, arr.dtype, scale_factors)
    with contextlib.redirect_stdout(sys.stderr):
        write_image(
            arr,
            str(args.out),
            scale_factors=scale_factors,
            axes="zyx",
            storage_options={"chunks": tuple(args.chunks)},
        )
    seconds = time.perf_counter() - t0

    group = zarr.open_group(str(args.out), mode="r")
    paths = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    print(
        json.dumps(
            {
                "tool": "ome-zarr-py",
                "version": ome_zarr.__version__,
                "seconds": round(seconds, 3),
                "levels": [list(group[pth].shape) for pth in paths],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
