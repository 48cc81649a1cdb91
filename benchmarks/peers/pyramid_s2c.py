"""Peer benchmark: OME-Zarr pyramid writing with stack-to-chunk (MultiScaleGroup).

Measures wall time from opening the input .npy (memory-mapped) to level 0 and
the downsampled levels all being written.

    python pyramid_s2c.py --input ARRAY.npy --out OUT.ome.zarr --levels 3 --chunks CZ CY CX [--processes N]

How stack-to-chunk 2.1 is driven, and the choices it forces:
- Axis order is (x, y, z) with z last (its default dimension names), and
  ``add_full_res_data`` wants a dask array chunked (nx, ny, 1). So the input is
  given as a stack of lazy per-plane reads (each task memory-maps the .npy and
  returns plane z=k transposed), the way stack-to-chunk is meant to be fed from
  a stack of image files. (``da.from_array(memmap.T, chunks=(nx, ny, 1))`` also
  works, but then every joblib job pickles the whole array: slower and far more
  RAM.) Storage chunks are (CX, CY, CZ) in that order: the same physical chunks.
- An ``array_spec`` (pydantic_zarr ArraySpec) is required. Codecs are
  bytes + zstd level 0 (zarr-python's own default; ArraySpec alone would write
  uncompressed). Voxel size 1 um.
- Sharding is always added by stack-to-chunk (not optional): level-0 shards span
  the whole x-y plane and one chunk in z; each worker holds such a slab in RAM.
- ``add_downsample_level(1)``, ``(2)``, ...: 2x local mean (skimage
  block_reduce) in ALL three axes, x, y and z (unlike ome-zarr-py, which keeps z).
- Parallelism: joblib with ``--processes`` worker processes (default: all cores)
  for both the copy and the downsampling; writes go through tensorstore.

Prints one JSON line on stdout: tool, version, seconds, levels (shape per level,
reported in (z, y, x) order; stored as (x, y, z)), peak_rss_mb (this process)
and peak_rss_children_mb (largest joblib worker, measured after the
workers are shut down, outside the timed part).
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

import dask
import dask.array as da
import numpy as np
import stack_to_chunk
from joblib.externals.loky import get_reusable_executor
from pydantic_zarr.v3 import ArraySpec, NamedConfig

log = logging.getLogger("pyramid_s2c")


def _read_plane(path: str, k: int) -> np.ndarray:
    """Plane z=k of the .npy, as an (x, y) array."""
    return np.ascontiguousarray(np.load(path, mmap_mode="r")[k].T)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--chunks", required=True, type=int, nargs=3, metavar=("CZ", "CY", "CX"))
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")

    if args.out.exists():
        shutil.rmtree(args.out)
    cz, cy, cx = args.chunks

    t0 = time.perf_counter()
    arr = np.load(args.input, mmap_mode="r")
    planes = [
        da.from_delayed(
            dask.delayed(_read_plane)(str(args.input), k), shape=arr.shape[:0:-1], dtype=arr.dtype
        )
        for k in range(arr.shape[0])
    ]
    data = da.stack(planes, axis=2)  # (x, y, z), chunks (nx, ny, 1)
    spec = ArraySpec.from_array(
        data,
        chunk_grid=NamedConfig(name="regular", configuration={"chunk_shape": [cx, cy, cz]}),
        codecs=(NamedConfig(name="bytes"), NamedConfig(name="zstd", configuration={"level": 0})),
    )
    with contextlib.redirect_stdout(sys.stderr):
        group = stack_to_chunk.MultiScaleGroup(
            args.out,
            name="image",
            voxel_size=(1.0, 1.0, 1.0),
            spatial_unit="micrometer",
            array_spec=spec,
        )
        group.add_full_res_data(data, n_processes=args.processes)
        log.info("level 0 written at %.2f s", time.perf_counter() - t0)
        for level in range(1, args.levels):
            group.add_downsample_level(level, n_processes=args.processes)
    seconds = time.perf_counter() - t0
    # Stop joblib's reusable loky workers so that RUSAGE_CHILDREN counts them.
    get_reusable_executor().shutdown(wait=True)

    print(
        json.dumps(
            {
                "tool": "stack-to-chunk",
                "version": stack_to_chunk.__version__,
                "seconds": round(seconds, 3),
                "levels": [list(group[lv].shape)[::-1] for lv in group.levels],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_rss_children_mb": round(
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
