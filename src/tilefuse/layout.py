"""Where a sequence of tiles lies: placement arrays, world bounds and the overlap search.

`Layout` works on any sequence of `Tile` (a `Tileset`, a list), so the modules
below `tileset.py` (labels, registration, previews, ...) can find overlaps
without importing `Tileset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.geometry import INTEGER_TOL, boxes_of, overlapping_pairs, voxel_slices

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.tile import Tile

__all__ = ["Layout", "Overlap"]


@dataclass(frozen=True)
class Overlap:
    """The intersection of two tiles.

    Attributes
    ----------
    i, j : int
        Tile indices, ``i < j``.
    lo, hi : ndarray
        World box (z, y, x) of the intersection, micrometres, half-open.
    slices_i, slices_j : tuple of slice
        Voxel slices (z, y, x) of tiles ``i`` and ``j`` covering the intersection.
    """

    i: int
    j: int
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    slices_i: tuple[slice, ...]
    slices_j: tuple[slice, ...]

    @property
    def size(self) -> NDArray[np.float64]:
        """Extent (z, y, x) of the intersection in micrometres."""
        return self.hi - self.lo

    @property
    def volume(self) -> float:
        """Intersection volume in cubic micrometres (area for 2D tiles of unit z)."""
        return float(np.prod(self.size))


class Layout:
    """Placement arrays of a sequence of tiles, computed once (vectorised).

    Parameters
    ----------
    tiles : sequence of Tile
        At least one tile; overlap indices refer to positions in this sequence.
    """

    def __init__(self, tiles: Sequence[Tile]) -> None:
        self.tiles: tuple[Tile, ...] = tuple(tiles)

    @cached_property
    def placement(self) -> dict[str, NDArray[Any]]:
        """Per-tile affines, offsets, voxel sizes, shapes and axis-alignment, as arrays."""
        aff = np.stack([t.affine for t in self.tiles])
        lin = aff[:, :3, :3]
        diag = np.diagonal(lin, axis1=1, axis2=2)
        off_diag = lin - diag[:, :, None] * np.eye(3)
        return {
            "affine": aff,
            "offset": aff[:, :3, 3],
            "voxel_size": np.linalg.norm(lin, axis=1),
            "shape": np.array([t.shape for t in self.tiles]),
            "axis_aligned": np.all(np.abs(off_diag) <= 1e-9, axis=(1, 2))
            & np.all(diag > 0, axis=1),
        }

    @cached_property
    def boxes(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World boxes ``(lo, hi)``, one row per tile."""
        p = self.placement
        return boxes_of(p["affine"], p["shape"])

    @property
    def bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World box ``(lo, hi)`` covering every tile."""
        lo, hi = self.boxes
        return lo.min(axis=0), hi.max(axis=0)

    def overlaps(self) -> list[Overlap]:
        """Every pair of overlapping tiles, once each (``i < j``).

        Uses a uniform grid index over the tiles' world boxes, so cost grows with
        the number of tiles and true neighbours, not with its square; boxes
        and voxel slices of axis-aligned tiles are computed vectorised.
        """
        lo, hi = self.boxes
        pairs = overlapping_pairs(lo, hi)
        if not len(pairs):
            return []
        i, j = pairs[:, 0], pairs[:, 1]
        olo, ohi = np.maximum(lo[i], lo[j]), np.minimum(hi[i], hi[j])
        si = self.voxel_ranges(i, olo, ohi)
        sj = self.voxel_ranges(j, olo, ohi)
        return [
            Overlap(int(a), int(b), bl, bh, x, y)
            for a, b, bl, bh, x, y in zip(i, j, olo, ohi, si, sj, strict=True)
        ]

    def voxel_ranges(
        self, idx: NDArray[np.intp], lo: NDArray[np.float64], hi: NDArray[np.float64]
    ) -> list[tuple[slice, ...]]:
        """Voxel slices of tiles ``idx`` covering world boxes ``[lo, hi)`` (one per row)."""
        tiles, p = self.tiles, self.placement
        axis_aligned = p["axis_aligned"][idx]
        offs, vs, shape = p["offset"][idx], p["voxel_size"][idx], p["shape"][idx]
        # voxel i covers [i - 1/2, i + 1/2) in index space (voxel centres at integers)
        start = np.clip(np.floor((lo - offs) / vs + 0.5 + INTEGER_TOL), 0, shape).astype(int)
        stop = np.clip(np.ceil((hi - offs) / vs + 0.5 - INTEGER_TOL), 0, shape).astype(int)
        out: list[tuple[slice, ...]] = []
        for k, (a, b) in enumerate(zip(start.tolist(), stop.tolist(), strict=True)):
            if axis_aligned[k]:
                out.append((slice(a[0], b[0]), slice(a[1], b[1]), slice(a[2], b[2])))
            else:
                t = tiles[idx[k]]
                out.append(voxel_slices(t.affine, t.shape, lo[k], hi[k]))
        return out
