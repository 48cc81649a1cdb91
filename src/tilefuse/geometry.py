"""Boxes, affines and the overlap search.

All coordinates are (z, y, x). A tile's placement is a 4x4 affine that maps
voxel indices to world micrometres. **Voxel centres**: voxel ``i`` sits at
world position ``A @ i`` (its centre), exactly as NGFF
``coordinateTransformations`` and BigDataViewer's ViewRegistrations define it.
Voxel ``i`` covers the index interval ``[i - 1/2, i + 1/2)``, so a tile of
shape ``n`` spans the box ``[A @ -1/2, A @ (n - 1/2))``: from the first voxel's
centre minus half a voxel to the last voxel's centre plus half a voxel.
Every path that resamples a grid maps target voxel centres to source indices
(`nearest_indices` for labels: never interpolated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tilefuse.errors import ParameterError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "affine_from_offset",
    "box_of",
    "boxes_of",
    "boxes_overlap",
    "is_translation",
    "nearest_index",
    "nearest_indices",
    "nearest_indices_separable",
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
        World position (z, y, x) of the centre of voxel (0, 0, 0) in micrometres.

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
    """World bounding box ``(lo, hi)`` of a tile of ``shape`` placed by ``affine``.

    The box of the voxels' extents: index ``-1/2`` to ``n - 1/2`` per axis.
    """
    lo, hi = boxes_of(np.asarray(affine)[None], np.asarray(shape)[None])
    return lo[0], hi[0]


def boxes_of(
    affines: NDArray[np.float64], shapes: NDArray[np.int_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """World bounding boxes ``(lo, hi)``, each (n, 3), of n tiles at once.

    Parameters
    ----------
    affines : ndarray of shape (n, 4, 4)
    shapes : ndarray of shape (n, 3)
    """
    unit = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
    corners = unit[None, :, :] * np.asarray(shapes, dtype=float)[:, None, :] - 0.5  # (n, 8, 3)
    world = np.einsum("nij,nkj->nki", affines[:, :3, :3], corners) + affines[:, None, :3, 3]
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
    lo: NDArray[np.float64], hi: NDArray[np.float64], *, max_cells: int = 64
) -> NDArray[np.intp]:
    """Find every pair of boxes that overlap, each once, with a uniform grid index.

    Space is cut into cells the size of the median box; each box is entered
    in the cells it touches, candidate pairs are boxes that share a cell, and
    candidates are tested exactly, all vectorised. On tile grids a box touches
    a handful of cells, so the cost is about linear in the number of boxes.
    Boxes much larger than the median (touching more than ``max_cells``
    cells) are tested against all boxes directly.

    Parameters
    ----------
    lo, hi : ndarray of shape (n, d)
        Lower and upper (half-open) corners.
    max_cells : int
        Boxes touching more cells than this are handled by a direct test.

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
    ext = hi - lo
    cell = np.median(ext, axis=0)
    cell = np.where(cell > 0, cell, 1.0)
    first = np.floor((lo - lo.min(axis=0)) / cell).astype(np.int64)
    last = np.maximum(np.ceil((hi - lo.min(axis=0)) / cell).astype(np.int64) - 1, first)
    span = last - first + 1
    n_cells = np.prod(span, axis=1)
    big = n_cells > max_cells
    pairs = [_pairs_in_cells(np.flatnonzero(~big), first, span, lo, hi)]
    for i in np.flatnonzero(big):  # few, if any: test them against everything
        others = np.arange(n)
        hit = np.all((np.maximum(lo[i], lo) < np.minimum(hi[i], hi)), axis=1) & (others != i)
        j = others[hit]
        pairs.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    out = np.unique(np.concatenate(pairs).reshape(-1, 2), axis=0)
    return out.astype(np.intp)


def _pairs_in_cells(
    idx: NDArray[np.intp],
    first: NDArray[np.int64],
    span: NDArray[np.int64],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
) -> NDArray[np.intp]:
    """Overlapping pairs among boxes ``idx`` that share at least one grid cell."""
    if len(idx) < 2:
        return np.empty((0, 2), dtype=np.intp)
    d = first.shape[1]
    counts = np.prod(span[idx], axis=1)
    owner = np.repeat(idx, counts)
    # k-th cell of each box, as a multi-index offset inside its span
    k = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    cells = np.empty((len(owner), d), dtype=np.int64)
    sp = span[owner]
    for ax in range(d - 1, -1, -1):
        cells[:, ax] = first[owner, ax] + k % sp[:, ax]
        k //= sp[:, ax]
    dims = np.asarray(cells.max(axis=0)) + 1
    key = np.asarray(np.ravel_multi_index(tuple(cells.T), tuple(int(x) for x in dims)))
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    # partners of entry e: the following entries with the same cell key
    end = np.searchsorted(key, key, side="right")
    c = end - np.arange(len(key)) - 1
    a_idx = np.repeat(np.arange(len(key)), c)
    b_idx = a_idx + 1 + (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))
    a, b = owner[a_idx], owner[b_idx]
    keep = np.all(np.maximum(lo[a], lo[b]) < np.minimum(hi[a], hi[b]), axis=1)
    a, b = a[keep], b[keep]
    return np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)


def voxel_slices(
    affine: NDArray[np.float64],
    shape: Sequence[int],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
) -> tuple[slice, ...]:
    """Voxel slices of a tile that cover the world box ``[lo, hi)``.

    For axis-aligned tiles this is exact (every voxel whose extent
    ``[i - 1/2, i + 1/2)`` intersects the box); for rotated tiles it is the
    voxel bounding box of the world box.
    """
    inv = np.linalg.inv(affine)
    corners = np.array(np.meshgrid(*[[lo[i], hi[i]] for i in range(3)], indexing="ij"))
    idx = inv[:3, :3] @ corners.reshape(3, -1) + inv[:3, 3:4] + 0.5
    start = np.floor(idx.min(axis=1) + INTEGER_TOL).astype(int)
    stop = np.ceil(idx.max(axis=1) - INTEGER_TOL).astype(int)
    return tuple(
        slice(int(max(a, 0)), int(min(b, s))) for a, b, s in zip(start, stop, shape, strict=True)
    )


def nearest_index(coords: ArrayLike) -> NDArray[np.int64]:
    """The voxel whose extent holds each continuous index: ``floor(c + 1/2)``.

    Halves round up (towards +inf) on every axis, the same way everywhere;
    values within `INTEGER_TOL` of a half are taken as that half, so float
    noise in an affine never flips a voxel.
    """
    c = np.asarray(coords, dtype=float) + 0.5
    r = np.round(c)
    c = np.where(np.abs(c - r) < INTEGER_TOL, r, c)
    return np.floor(c).astype(np.int64)


def nearest_indices(
    source_affine: NDArray[np.float64],
    source_shape: Sequence[int],
    target_affine: NDArray[np.float64],
    target_region: Sequence[slice],
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """The voxel correspondence used for labels: target voxel centre -> nearest source voxel.

    The one rule by which label deduplication links voxels and label fusion
    places them (what is linked is what is placed): each target voxel's
    centre is mapped into the source's index space and rounded with
    `nearest_index`; it has a partner when that voxel exists.

    Parameters
    ----------
    source_affine, target_affine : ndarray of shape (4, 4)
        Placements (voxel centres -> world) of the source and of the target grid.
    source_shape : sequence of 3 ints
        Source shape (z, y, x).
    target_region : sequence of 3 slices
        The target voxels (z, y, x) to map.

    Returns
    -------
    (indices, valid)
        ``indices`` is ``(3, *region_shape)``, the source voxel of each target
        voxel (clipped into the source); ``valid`` marks target voxels whose
        nearest source voxel exists.
    """
    m = np.linalg.inv(np.asarray(source_affine, dtype=float)) @ np.asarray(target_affine, float)
    axes = [np.arange(r.start, r.stop, dtype=float) for r in target_region]
    grid = np.meshgrid(*axes, indexing="ij")
    pts = np.stack(grid).reshape(3, -1)
    cont = m[:3, :3] @ pts + m[:3, 3:4]
    idx = nearest_index(cont)
    n = np.asarray(source_shape, dtype=np.int64)[:, None]
    valid = np.all((idx >= 0) & (idx < n), axis=0)
    idx = np.clip(idx, 0, n - 1)
    shape = tuple(len(a) for a in axes)
    return idx.reshape(3, *shape), valid.reshape(shape)


def nearest_indices_separable(
    source_affine: NDArray[np.float64],
    source_shape: Sequence[int],
    target_affine: NDArray[np.float64],
    target_region: Sequence[slice],
) -> list[tuple[NDArray[np.int64], NDArray[np.bool_]]]:
    """`nearest_indices` for axis-aligned grids, one axis at a time.

    Same rule, same rounding, without the full index grid: per axis (z, y, x)
    the source index of every target index in ``target_region`` and whether
    it exists. The two grids must be axis-aligned to each other.
    """
    m = np.linalg.inv(np.asarray(source_affine, dtype=float)) @ np.asarray(target_affine, float)
    if not is_translation(m):
        msg = "nearest_indices_separable needs two axis-aligned grids (no rotation between them)"
        raise ParameterError(msg)
    out = []
    for ax, r in enumerate(target_region):
        cont = m[ax, ax] * np.arange(r.start, r.stop, dtype=float) + m[ax, 3]
        idx = nearest_index(cont)
        valid = (idx >= 0) & (idx < int(source_shape[ax]))
        out.append((np.clip(idx, 0, int(source_shape[ax]) - 1), valid))
    return out
