"""Tissue surfaces of a tile: height maps of the first plane above a threshold, from either side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.tile import Tile

__all__ = ["Surfaces", "tile_surfaces"]


@dataclass(frozen=True)
class Surfaces:
    """Height maps ``(y, x)`` of one tile, in z planes (NaN where no tissue).

    Attributes
    ----------
    top : ndarray
        First plane from z = 0 where the signal passes the threshold.
    bottom : ndarray
        First plane from the last z, going down, where it passes.
    contact : ndarray
        The side that touches the coverslip (``top`` or ``bottom``, as asked).
    """

    top: NDArray[np.float64]
    bottom: NDArray[np.float64]
    contact: NDArray[np.float64]

    def world_z(self, tile: Tile, which: str = "top") -> NDArray[np.float64]:
        """A height map in world micrometres (z of the plane's voxel centre)."""
        return tile.offset[0] + getattr(self, which) * tile.voxel_size[0]


def tile_surfaces(
    tile: Tile,
    threshold: float,
    *,
    channel: int = 0,
    coverslip: Literal["top", "bottom"] = "bottom",
    block_rows: int = 64,
) -> Surfaces:
    """Top, bottom and contact surfaces of the tissue in one tile.

    Vectorised over (y, x): for every column the first plane, from each
    side, whose value exceeds ``threshold``. The tile is read in slabs of
    ``block_rows`` rows (all planes), never whole.

    Parameters
    ----------
    tile : Tile
        The tile.
    threshold : float
        Signal above this is tissue (e.g. from `Tileset.intensity_range`).
    channel : int
        The channel to use.
    coverslip : {"top", "bottom"}
        Which side of the stack is against the coverslip (the contact surface).
    block_rows : int
        Rows (y) read at a time.

    Returns
    -------
    Surfaces
    """
    nz, ny, nx = tile.shape
    top = np.full((ny, nx), np.nan)
    bottom = np.full((ny, nx), np.nan)
    for y0 in range(0, ny, block_rows):
        rows = slice(y0, min(y0 + block_rows, ny))
        data: Any = tile.source.read((slice(0, nz), rows, slice(0, nx)))[channel]
        mask = data > threshold
        any_ = mask.any(axis=0)
        first = np.argmax(mask, axis=0).astype(float)
        last = (nz - 1 - np.argmax(mask[::-1], axis=0)).astype(float)
        top[rows] = np.where(any_, first, np.nan)
        bottom[rows] = np.where(any_, last, np.nan)
    return Surfaces(top, bottom, bottom if coverslip == "bottom" else top)
