"""Peer benchmark: tile fusion with multiview-stitcher (no registration).

Measures wall time from the start of reading the TIFF tiles to the fused
volume being fully written to a zarr store.

    python mvs_fuse.py --tiles DIR --out OUT.zarr --chunks CZ CY CX [--writer dask|mvs]

DIR holds tile_000.tif, tile_001.tif, ... (3D uint16, (z, y, x)) and
positions.json = {"voxel_size": [vz, vy, vx], "offsets_um": [[z, y, x], ...]}.

Each tile becomes a SpatialImage via ``spatial_image_utils.get_sim_from_array``
with scale = voxel size and translation = the stage offset (um); the affine under
``transform_key`` is the identity, so the stage positions are used as they are.
``fusion.fuse`` then runs with its defaults (weighted_average_fusion with linear
blending weights, interpolation_order=1, output_stack_mode="union", output
spacing = the tiles' voxel size) and ``output_chunksize`` = the given chunks.

--writer dask (default): lazy fuse, take the (z, y, x) array out of the
  (t=1, c=1, z, y, x) result and write it with dask ``to_zarr`` (threaded
  scheduler, all cores) as a zarr v3 array, default compressor (zstd).
--writer mvs: multiview-stitcher's own chunked writer, ``fuse(...,
  output_zarr_url=OUT)``, blocks spread over all cores with
  ``misc_utils.process_batch_using_joblib`` (threading backend); the store holds
  the (1, 1, z, y, x) array.

Prints one JSON line on stdout: tool, version, seconds, out_shape (z, y, x),
out_bytes (uncompressed nbytes of the fused array), writer, peak_rss_mb.
"""

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import dask.array as da
import multiview_stitcher
import numpy as np
import tifffile
from multiview_stitcher import fusion, misc_utils
from multiview_stitcher import spatial_image_utils as si_utils

log = logging.getLogger("mvs_fuse")
DIMS = ("z", "y", "x")
TRANSFORM_KEY = "stage_metadata"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--chunks", required=True, type=int, nargs=3, metavar=("CZ", "CY", "CX"))
    p.add_argument("--writer", choices=("dask", "mvs"), default="dask")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")

    if args.out.exists():
        shutil.rmtree(args.out)
    chunks = dict(zip(DIMS, args.chunks, strict=False))
    ncpu = os.cpu_count() or 1

    t0 = time.perf_counter()
    pos = json.loads((args.tiles / "positions.json").read_text())
    scale = dict(zip(DIMS, map(float, pos["voxel_size"]), strict=False))
    sims = []
    for i, off in enumerate(pos["offsets_um"]):
        arr = tifffile.imread(args.tiles / f"tile_{i:03d}.tif")
        sims.append(
            si_utils.get_sim_from_array(
                arr,
                dims=list(DIMS),
                scale=scale,
                translation=dict(zip(DIMS, map(float, off), strict=False)),
                transform_key=TRANSFORM_KEY,
            )
        )
    log.info("read %d tiles in %.2f s", len(sims), time.perf_counter() - t0)

    # multiview-stitcher prints progress on stdout; keep stdout for the JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        if args.writer == "dask":
            fused = fusion.fuse(images=sims, transform_key=TRANSFORM_KEY, output_chunksize=chunks)
            data = fused.data[0, 0]  # drop t, c
            da.to_zarr(data, str(args.out), compute=True)
        else:
            fused = fusion.fuse(
                images=sims,
                transform_key=TRANSFORM_KEY,
                output_chunksize=chunks,
                output_zarr_url=str(args.out),
                batch_options={
                    "batch_func": misc_utils.process_batch_using_joblib,
                    "n_batch": 4 * ncpu,
                    "batch_func_kwargs": {"n_jobs": ncpu, "backend": "threading"},
                },
            )
            data = fused.data[0, 0]
    seconds = time.perf_counter() - t0

    out_shape = [int(s) for s in data.shape]
    print(
        json.dumps(
            {
                "tool": "multiview-stitcher",
                "version": multiview_stitcher.__version__,
                "seconds": round(seconds, 3),
                "out_shape": out_shape,
                "out_bytes": int(np.prod(out_shape)) * np.dtype(data.dtype).itemsize,
                "writer": args.writer,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
