"""The ``tilefuse demo`` data set: a synthetic ExM-like mosaic on disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tilefuse.errors import ParameterError
from tilefuse.io.tiff import write_tiff
from tilefuse.io.tileconfig import write_tileconfig
from tilefuse.synthetic import SyntheticSample

if TYPE_CHECKING:
    import os

    from numpy.typing import NDArray

__all__ = ["DEFAULT_TILE_SHAPE", "DemoData", "tile_shape_for_size", "write_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoData:
    """Where the demo wrote its files, and the sample they were cut from.

    Attributes
    ----------
    folder, tileconfig, labels_tileconfig : Path
        The output folder and the two Fiji TileConfiguration files (image, labels).
    sample : SyntheticSample
        The ground truth, evaluable on any region (``sample.image(region)``,
        ``sample.labels(region)``); the tiles' voxel grid is the sample's.
    """

    folder: Path
    tileconfig: Path
    labels_tileconfig: Path
    sample: SyntheticSample

    @cached_property
    def volume(self) -> NDArray[np.uint16]:
        """The whole ground-truth image in memory (small demos only)."""
        return self.sample.image(tuple(slice(0, n) for n in self.sample.shape))

    @cached_property
    def labels(self) -> NDArray[np.uint32]:
        """The whole ground-truth label image in memory (small demos only)."""
        return self.sample.labels(tuple(slice(0, n) for n in self.sample.shape))


#: tile shape (z, y, x) of the default demo: a 3 x 3 grid makes a (40, 518, 518) sample
DEFAULT_TILE_SHAPE = (40, 192, 192)


def tile_shape_for_size(nbytes: float, grid: tuple[int, int], z: int = 40) -> tuple[int, int, int]:
    """The (z, s, s) uint16 tile shape whose ``grid`` of tiles holds about ``nbytes``."""
    s = round(float(np.sqrt(nbytes / (grid[0] * grid[1] * z * 2))))
    if s < 16:
        msg = (
            f"--size {nbytes:.3g} bytes is too small for a {grid[0]} x {grid[1]} grid "
            "(tiles would be under 16 voxels wide)"
        )
        raise ParameterError(msg)
    return (z, s, s)


def write_demo(
    folder: str | os.PathLike[str],
    *,
    grid: tuple[int, int] = (3, 3),
    tile_shape: tuple[int, int, int] = DEFAULT_TILE_SHAPE,
    shape: tuple[int, int, int] | None = None,
    overlap: float = 0.15,
    seed: int = 0,
    slab: int = 8,
) -> DemoData:
    """Write a synthetic mosaic: TIFF tiles, per-tile labels and TileConfiguration files.

    Tiles of ``tile_shape`` are laid on a ``grid`` with ``overlap``, so more rows and
    columns make a bigger sample (not smaller tiles). Each tile is generated from a
    `SyntheticSample` by itself, ``slab`` planes at a time, so memory is one tile, whatever
    the size of the mosaic. Each tile's label image numbers its blobs independently from 1 (as
    a per-tile segmentation would), in ``labels/`` with its own TileConfiguration.

    Parameters
    ----------
    folder : str or PathLike
        Output folder (created).
    grid : (int, int)
        Tile rows and columns.
    tile_shape : (int, int, int)
        Size (z, y, x) of one tile in voxels.
    shape : (int, int, int), optional
        Size of the whole sample instead; tiles are then sized to cover it with ``grid``
        (``tile_shape`` is ignored).
    overlap : float
        Overlap fraction between neighbours.
    seed : int
        Random seed.
    slab : int
        Planes generated at a time.

    Returns
    -------
    DemoData
    """
    folder = Path(folder)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rows, cols = grid
    if shape is not None:
        nz, ny, nx = (int(v) for v in shape)
        th = int(np.ceil(ny / (rows - (rows - 1) * overlap)))
        tw = int(np.ceil(nx / (cols - (cols - 1) * overlap)))
    else:
        nz, th, tw = (int(v) for v in tile_shape)
        sy, sx = round(th * (1 - overlap)), round(tw * (1 - overlap))
        ny, nx = th + (rows - 1) * sy, tw + (cols - 1) * sx
    sample = SyntheticSample((nz, ny, nx), seed=seed, blob_radius=5.0)
    ys = np.linspace(0, ny - th, rows).round().astype(int) if rows > 1 else np.array([0])
    xs = np.linspace(0, nx - tw, cols).round().astype(int) if cols > 1 else np.array([0])
    names, lnames, offsets = [], [], []
    rng = np.random.default_rng(seed)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            tile = np.empty((nz, th, tw), dtype=np.uint16)
            ltile = np.empty((nz, th, tw), dtype=np.uint32)
            for z0 in range(0, nz, slab):
                region = (slice(z0, min(z0 + slab, nz)), slice(y, y + th), slice(x, x + tw))
                tile[z0 : z0 + slab] = sample.image(region)
                ltile[z0 : z0 + slab] = sample.labels(region)
            # per-tile labels: renumber the blobs of this tile 1..n in random order
            ids = np.unique(ltile)
            ids = ids[ids > 0]
            local = rng.permutation(len(ids)).astype(np.uint32) + 1
            ltile[ltile > 0] = local[np.searchsorted(ids, ltile[ltile > 0])]
            write_tiff(folder / f"tile_r{r}_c{c}.tif", tile)
            write_tiff(folder / "labels" / f"labels_r{r}_c{c}.tif", ltile)
            names.append(f"tile_r{r}_c{c}.tif")
            lnames.append(f"labels_r{r}_c{c}.tif")
            offsets.append((0.0, float(y), float(x)))
    offs = np.array(offsets)
    cfg = write_tileconfig(folder / "TileConfiguration.txt", names, offs)
    lcfg = write_tileconfig(folder / "labels" / "TileConfiguration.txt", lnames, offs)
    logger.info("wrote %d tiles of %s to %s", len(names), (nz, th, tw), folder)
    return DemoData(folder, cfg, lcfg, sample)
