"""The ``tilefuse demo`` data set: a synthetic ExM-like mosaic on disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tilefuse.io.tiff import write_tiff
from tilefuse.io.tileconfig import write_tileconfig
from tilefuse.synthetic import cut_tiles, make_volume

if TYPE_CHECKING:
    import os

    from numpy.typing import NDArray

__all__ = ["DemoData", "write_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoData:
    """Where the demo wrote its files."""

    folder: Path
    tileconfig: Path
    labels_tileconfig: Path
    volume: NDArray[np.uint16]
    labels: NDArray[np.uint32]


def write_demo(
    folder: str | os.PathLike[str],
    *,
    grid: tuple[int, int] = (3, 3),
    shape: tuple[int, int, int] = (40, 520, 520),
    overlap: float = 0.15,
    seed: int = 0,
) -> DemoData:
    """Write a synthetic mosaic: TIFF tiles, per-tile labels and TileConfiguration files.

    The volume has a smooth textured background and bright blobs; it is cut
    into a ``grid`` of overlapping 3D tiles. Each tile's label image numbers
    its blobs independently from 1 (as a per-tile segmentation would), in
    ``labels/`` with its own TileConfiguration.

    Parameters
    ----------
    folder : str or PathLike
        Output folder (created).
    grid : (int, int)
        Tile rows and columns.
    shape : (int, int, int)
        Size (z, y, x) of the whole sample in voxels.
    overlap : float
        Overlap fraction between neighbours.
    seed : int
        Random seed.

    Returns
    -------
    DemoData
    """
    folder = Path(folder)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    volume, labels = make_volume(shape, seed=seed, blob_radius=5.0)
    img_m = cut_tiles(volume, grid, overlap=overlap)
    lab_m = cut_tiles(labels, grid, overlap=overlap)
    names, lnames = [], []
    rng = np.random.default_rng(seed)
    for k, (tile, ltile) in enumerate(zip(img_m.tiles, lab_m.tiles, strict=True)):
        r, c = divmod(k, grid[1])
        name = f"tile_r{r}_c{c}.tif"
        write_tiff(folder / name, tile)
        # per-tile labels: renumber the blobs of this tile 1..n in random order
        ids = np.unique(ltile[ltile > 0])
        lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
        lut[ids] = rng.permutation(len(ids)).astype(np.uint32) + 1
        write_tiff(folder / "labels" / f"labels_r{r}_c{c}.tif", lut[ltile])
        names.append(name)
        lnames.append(f"labels_r{r}_c{c}.tif")
    cfg = write_tileconfig(folder / "TileConfiguration.txt", names, img_m.offsets_px)
    lcfg = write_tileconfig(folder / "labels" / "TileConfiguration.txt", lnames, img_m.offsets_px)
    logger.info("wrote %d tiles of %s to %s", len(names), img_m.tiles[0].shape, folder)
    return DemoData(folder, cfg, lcfg, volume, labels)
