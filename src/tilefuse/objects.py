"""Per-object measurements of a label volume, computed block by block."""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.labels import check_label_dtype
from tilefuse.parallel import imap_unordered

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

__all__ = ["ObjectTable", "object_table"]


@dataclass(frozen=True)
class ObjectTable:
    """One row per object (label), positions in world micrometres (z, y, x).

    Attributes
    ----------
    label : ndarray of shape (n,)
    voxels : ndarray of shape (n,)
        Voxel count.
    centroid : ndarray of shape (n, 3)
        Mean of the object's voxel centres, ``origin + index * voxel_size``
        (``origin`` is the centre of voxel 0): a one-voxel object's centroid
        is that voxel's centre.
    bbox_lo, bbox_hi : ndarray of shape (n, 3)
        Half-open world bounding box of the object's voxels (their extents,
        half a voxel beyond the first and last centres).
    """

    label: NDArray[np.int64]
    voxels: NDArray[np.int64]
    centroid: NDArray[np.float64]
    bbox_lo: NDArray[np.float64]
    bbox_hi: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.label)

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as CSV (one row per object)."""
        path = Path(path)
        cols = ["label", "voxels"]
        for name in ("centroid", "bbox_lo", "bbox_hi"):
            cols += [f"{name}_{a}_um" for a in "zyx"]
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for k in range(len(self)):
                w.writerow(
                    [int(self.label[k]), int(self.voxels[k])]
                    + [f"{v:.6g}" for v in self.centroid[k]]
                    + [f"{v:.6g}" for v in self.bbox_lo[k]]
                    + [f"{v:.6g}" for v in self.bbox_hi[k]]
                )
        return path


def _block_stats(lab: NDArray[Any], start: tuple[int, int, int]) -> tuple[NDArray[Any], ...]:
    """Per label in a block: ids, counts, coordinate sums, mins and maxs (global indices)."""
    nz = np.nonzero(lab)
    ids = lab[nz].astype(np.int64)
    if not ids.size:
        e = np.empty((0,), np.int64)
        return e, e, np.empty((3, 0)), np.empty((3, 0), np.int64), np.empty((3, 0), np.int64)
    coords = np.stack(nz).astype(np.int64) + np.array(start, np.int64)[:, None]
    order = np.argsort(ids, kind="stable")
    ids, coords = ids[order], coords[:, order]
    u, first = np.unique(ids, return_index=True)
    counts = np.diff(np.r_[first, len(ids)])
    sums = np.add.reduceat(coords.astype(np.float64), first, axis=1)
    mins = np.minimum.reduceat(coords, first, axis=1)
    maxs = np.maximum.reduceat(coords, first, axis=1)
    return u, counts, sums, mins, maxs


class _StatsTask:
    def __init__(self, source: Any, block: tuple[int, int, int]) -> None:
        self.source, self.block = source, block

    def __call__(self, start: tuple[int, int, int]) -> tuple[NDArray[Any], ...]:
        region = tuple(
            slice(s, min(s + b, n))
            for s, b, n in zip(start, self.block, self.source.shape[-3:], strict=True)
        )
        data = np.asarray(self.source[(..., *region)])
        if data.ndim == 4:
            data = data[0]
        return _block_stats(data, start)


def object_table(
    labels: Any,
    *,
    voxel_size: ArrayLike | None = None,
    origin: ArrayLike | None = None,
    block: tuple[int, int, int] = (64, 512, 512),
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
) -> ObjectTable:
    """Voxel count, bounding box and centroid of every object, in world micrometres.

    Parameters
    ----------
    labels : MultiScaleGroup, zarr array or ndarray
        A label volume ``(z, y, x)`` (a leading axis of size 1 is allowed).
        A `MultiScaleGroup` supplies its own voxel size and origin (level 0).
    voxel_size, origin : array_like of 3 floats, optional
        For arrays (default 1 and 0); ``origin`` is the centre of voxel 0.
    block : tuple of 3 ints
        Block size of the scan (memory is about one block per worker).
    workers : int, optional
        Threads.
    client : distributed.Client, optional
        Scan on this dask cluster instead (``labels`` must then be a store the
        workers can open, e.g. a `MultiScaleGroup` on a shared filesystem).
    progress : bool
        Show a progress bar.

    Returns
    -------
    ObjectTable
        Rows sorted by label.
    """
    from tilefuse.io.ome_zarr import MultiScaleGroup

    if isinstance(labels, MultiScaleGroup):
        voxel_size = labels.voxel_size if voxel_size is None else voxel_size
        origin = labels.origin if origin is None else origin
        labels = labels[0]
    check_label_dtype(labels.dtype, "object_table")
    vs = np.asarray(voxel_size if voxel_size is not None else (1.0, 1.0, 1.0), dtype=float)
    org = np.asarray(origin if origin is not None else (0.0, 0.0, 0.0), dtype=float)
    shape = labels.shape[-3:]
    rz, ry, rx = (range(0, n, b) for n, b in zip(shape, block, strict=True))
    starts = list(itertools.product(rz, ry, rx))
    parts = [
        r
        for _, r in imap_unordered(
            _StatsTask(labels, block),
            starts,
            workers=workers,
            client=client,
            progress=progress,
            desc="objects",
        )
    ]
    ids = np.concatenate([p[0] for p in parts])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    counts = np.concatenate([p[1] for p in parts])[order]
    sums = np.concatenate([p[2] for p in parts], axis=1)[:, order]
    mins = np.concatenate([p[3] for p in parts], axis=1)[:, order]
    maxs = np.concatenate([p[4] for p in parts], axis=1)[:, order]
    if not ids.size:
        z3 = np.empty((0, 3))
        return ObjectTable(ids, counts, z3, z3, z3)
    u, first = np.unique(ids, return_index=True)
    n = np.add.reduceat(counts, first)
    s = np.add.reduceat(sums, first, axis=1)
    lo = np.minimum.reduceat(mins, first, axis=1)
    hi = np.maximum.reduceat(maxs, first, axis=1)
    return ObjectTable(
        u,
        n,
        org + (s / n).T * vs,
        org + (lo.T - 0.5) * vs,
        org + (hi.T + 0.5) * vs,
    )
