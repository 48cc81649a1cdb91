"""Peer benchmark: tile registration with multiview-stitcher.

    /work/peers-venv/bin/python benchmarks/peers/mvs_register.py --data DIR

DIR holds tile_000.npy, tile_001.npy, ... (3D float32, (z, y, x)) and
positions.json = {"voxel_size": [vz, vy, vx], "nominal_um": [[z, y, x], ...], ...}.

Each tile becomes a SpatialImage via ``spatial_image_utils.get_sim_from_array``
with scale = voxel size and translation = the nominal position (um), identity
affine under ``stage_metadata``, and a single-scale MultiscaleSpatialImage via
``msi_utils.get_msim_from_sim(sim, scale_factors=[])``. Then

    registration.register(msims, transform_key="stage_metadata",
                          reg_channel_index=0, new_transform_key="registered",
                          pairwise_reg_func=registration.phase_correlation_registration,
                          groupwise_resolution_method="global_optimization")

with all other parameters at their defaults (alternating_pattern pruning, no
binning, overlap_tolerance 0, dask default scheduler = threads). The timed part
is building the images plus ``register`` (the tiles are already in memory).

The registered position of a tile is where its voxel 0 lands: the affine under
``registered`` (which mvs stores already composed with the ``stage_metadata``
affine, see ``msi_utils.set_affine_transform(..., base_transform_key=...)``)
applied to the tile's origin (its translation).

Prints one JSON line on stdout: tool, version, seconds, positions_um.
"""

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import multiview_stitcher
import numpy as np
from multiview_stitcher import msi_utils, registration
from multiview_stitcher import spatial_image_utils as si_utils

log = logging.getLogger("mvs_register")
DIMS = ("z", "y", "x")
TRANSFORM_KEY = "stage_metadata"
NEW_KEY = "registered"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")

    pos = json.loads((args.data / "positions.json").read_text())
    arrays = [np.load(args.data / f"tile_{i:03d}.npy") for i in range(len(pos["nominal_um"]))]
    scale = dict(zip(DIMS, map(float, pos["voxel_size"]), strict=True))

    t0 = time.perf_counter()
    msims = []
    for arr, off in zip(arrays, pos["nominal_um"], strict=True):
        sim = si_utils.get_sim_from_array(
            arr,
            dims=list(DIMS),
            scale=scale,
            translation=dict(zip(DIMS, map(float, off), strict=True)),
            transform_key=TRANSFORM_KEY,
        )
        msims.append(msi_utils.get_msim_from_sim(sim, scale_factors=[]))
    # multiview-stitcher may print progress on stdout; keep stdout for the JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        registration.register(
            msims,
            transform_key=TRANSFORM_KEY,
            reg_channel_index=0,
            new_transform_key=NEW_KEY,
            pairwise_reg_func=registration.phase_correlation_registration,
            groupwise_resolution_method="global_optimization",
        )
    seconds = time.perf_counter() - t0

    positions = []
    for msim in msims:
        sim = msi_utils.get_sim_from_msim(msim)
        affine = np.asarray(si_utils.get_affine_from_sim(sim, transform_key=NEW_KEY))
        affine = affine.reshape(-1, 4, 4)[0]  # first (only) time point
        origin = si_utils.get_origin_from_sim(sim, asarray=True)
        positions.append((affine @ np.append(origin, 1.0))[:3].tolist())

    print(
        json.dumps(
            {
                "tool": "multiview-stitcher",
                "version": multiview_stitcher.__version__,
                "seconds": round(seconds, 3),
                "positions_um": positions,
            }
        )
    )


if __name__ == "__main__":
    main()
