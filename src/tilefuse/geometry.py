"""Boxes, affines and the overlap search.

All coordinates are (z, y, x). A tile's placement is a 4x4 affine that maps
voxel indices to world micrometres; voxel ``i`` of a tile covers the index
interval ``[i, i + 1)``, so a tile of shape ``n`` spans ``[A @ 0, A @ n)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "affine_from_offset",
    "box_of",
    "boxes_overlap",
    "is_translation",
    "overlapping_pairs",
    "voxel_slices",
]

#: Tolerance (in voxels) under which a translation counts as integral.
INTEGER_TOL = 1e-6


def affine_from_offset(voxel_size: ArrayLike, offset: ArrayLike) -> NDArray[np.float64]:
    """Return the 4x4 affine of an axis-aligned tile.

    Parameters
    ----------
    voxel_size : array_like of 3 floats
        Voxel size (z, y, x) in micrometres.
    offset : array_like of 3 floats
        World position (z, y, x) of voxel (0, 0, 0) in micrometres.

    Returns
    -------
    ndarray of shape (4, 4)
    """
    a = np.eye(4)
    a[:3, :3] = np.diag(np.asarray(voxel_size, dtype=float))
    a[:3, 3] = np.asarray(offset, dtype=float)
    return a


def is_translation(affine: NDArray[np.float64], tol: float = 1e-9) -> bool:
    """Whether an affine is a diagonal scale plus a translation (no rotation or shear)."""
    lin = affine[:3, :3]
    return bool(np.all(np.abs(lin - np.diag(np.diag(lin))) <= tol) and np.all(np.diag(lin) > 0))


def box_of(
    affine: NDArray[np.float64], shape: Sequence[int]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """World bounding box ``(lo, hi)`` of a tile of ``shape`` placed by ``affine``."""
    n = np.asarray(shape, dtype=float)
    corners = np.array(np.meshgrid(*[[0.0, s] for s in n], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def boxes_overlap(
    lo_a: NDArray[np.float64],
    hi_a: NDArray[np.float64],
    lo_b: NDArray[np.float64],
    hi_b: NDArray[np.float64],
) -> bool:
    """Whether two half-open boxes share a volume of positive size."""
    return bool(np.all(np.maximum(lo_a, lo_b) < np.minimum(hi_a, hi_b)))


def overlapping_pairs(
    lo: NDArray[np.float64], hi: NDArray[np.float64], *, batch: int = 1 << 22
) -> NDArray[np.intp]:
    """Find every pair of boxes that overlap, each once, by sort-and-sweep.

    Boxes are sorted along the axis that yields the fewest sweep candidates;
    a candidate ``(i, j)`` is any box ``j`` whose start lies before the end of
    box ``i`` on that axis. Candidates are then tested on the other axes,
    vectorised, in batches of at most ``batch`` pairs. The cost is
    ``O(n log n + candidates)``; on a regular grid that is linear in ``n``.

    Parameters
    ----------
    lo, hi : ndarray of shape (n, d)
        Lower and upper (half-open) corners.
    batch : int
        Maximum number of candidate pairs tested at once (bounds memory).

    Returns
    -------
    ndarray of shape (m, 2)
        Index pairs ``(i, j)`` with ``i < j``, sorted lexicographically.
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    n = lo.shape[0]
    if n < 2:
        return np.empty((0, 2), dtype=np.intp)
    best = None
    for ax in range(lo.shape[1]):
        order = np.argsort(lo[:, ax], kind="stable")
        slo = lo[order, ax]
        # candidates of sorted box k: boxes k+1 .. end[k]-1 (those starting before hi_k)
        end = np.searchsorted(slo, hi[order, ax], side="left")
        counts = np.maximum(end - np.arange(n) - 1, 0)
        total = int(counts.sum())
        if best is None or total < best[0]:
            best = (total, order, counts)
    assert best is not None
    _, order, counts = best
    out: list[NDArray[np.intp]] = []
    starts = np.arange(n)
    # walk the sorted boxes in groups whose candidate count fits in one batch
    cum = np.cumsum(counts)
    k0 = 0
    while k0 < n:
        base = cum[k0 - 1] if k0 else 0
        k1 = int(np.searchsorted(cum, base + batch, side="right"))
        k1 = max(k1, k0 + 1)
        c = counts[k0:k1]
        first = np.repeat(starts[k0:k1], c)
        within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        second = first + 1 + within
        a, b = order[first], order[second]
        keep = np.all(np.maximum(lo[a], lo[b]) < np.minimum(hi[a], hi[b]), axis=1)
        pair = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)[keep]
        out.append(pair)
        k0 = k1
    pairs = np.concatenate(out) if out else np.empty((0, 2), dtype=np.intp)
    if len(pairs):
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return pairs.astype(np.intp)


def voxel_slices(
    affine: NDArray[np.float64],
    shape: Sequence[int],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
) -> tuple[slice, ...]:
    """Voxel slices of a tile that cover the world box ``[lo, hi)``.

    For axis-aligned tiles this is exact (every voxel whose extent intersects
    the box); for rotated tiles it is the voxel bounding box of the world box.
    """
    inv = np.linalg.inv(affine)
    corners = np.array(np.meshgrid(*[[lo[i], hi[i]] for i in range(3)], indexing="ij"))
    idx = inv[:3, :3] @ corners.reshape(3, -1) + inv[:3, 3:4]
    start = np.floor(idx.min(axis=1) + INTEGER_TOL).astype(int)
    stop = np.ceil(idx.max(axis=1) - INTEGER_TOL).astype(int)
    return tuple(
        slice(int(max(a, 0)), int(min(b, s))) for a, b, s in zip(start, stop, shape, strict=True)
    )
