"""Globally consistent labels: union-find deduplication of per-tile label IDs across overlaps.

Each tile of a label tileset numbers its objects independently. `dedup_labels`
finds, in every overlap region, the pairs of labels that share voxels, keeps
the links that pass the rules, joins linked (tile, label) nodes with
union-find (connected components), and numbers the resulting objects 1..N.
Chains through any number of tiles and 4-tile corners merge, because every
overlapping pair of tiles contributes links, diagonal neighbours included.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from tilefuse.errors import GridMismatchError, LabelError, ParameterTypeError
from tilefuse.geometry import nearest_indices_separable
from tilefuse.layout import Layout
from tilefuse.parallel import map_in_order
from tilefuse.source import WrappedSource

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = ["LabelMapping", "LabelTable", "MappedSource", "check_label_dtype", "dedup_labels"]

logger = logging.getLogger(__name__)

#: z-planes read at a time when scanning a whole label tile
_SLAB = 16


def _fmt(v: Any) -> str:
    return "(" + ", ".join(f"{float(x):.6g}" for x in np.asarray(v).ravel()) + ")"


def check_label_dtype(dtype: Any, what: str) -> None:
    """Raise `LabelError` unless ``dtype`` is an integer type."""
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.integer):
        msg = f"{what}: label images must have an integer dtype, got {dt}"
        raise LabelError(msg)


def _global_dtype(n: int) -> np.dtype[Any]:
    return np.dtype(np.uint32) if n < np.iinfo(np.uint32).max else np.dtype(np.uint64)


class LabelTable:
    """A sparse lookup table from one tile's local label IDs to global IDs.

    Sized by the labels present, not by the largest ID: a tile whose only
    label is 3,000,000,000 costs two entries. Lookups use a dense table when
    the IDs are small enough for one to be cheap (built on first use and never
    pickled), else a binary search over the sorted keys. 0 maps to 0; a
    nonzero label the table does not know is an error.

    Parameters
    ----------
    keys : array of int
        Sorted, unique, nonzero local labels.
    values : array of int
        The global ID of each key.
    dtype : dtype
        Global label dtype.
    """

    #: dense tables are used up to this many entries (or 8 per key, if more)
    DENSE_LIMIT = 1 << 16

    def __init__(self, keys: NDArray[Any], values: NDArray[Any], dtype: Any) -> None:
        self.keys = np.asarray(
            keys, dtype=np.uint64 if len(keys) and int(np.max(keys)) >= 1 << 63 else np.int64
        )
        self.values = np.asarray(values, dtype=dtype)
        if self.keys.shape != self.values.shape or self.keys.ndim != 1:
            msg = "label table keys and values must be 1-D arrays of one length"
            raise LabelError(msg)
        self._dense: NDArray[Any] | None = None

    @classmethod
    def from_dense(cls, lut: NDArray[Any]) -> LabelTable:
        """From a dense table ``lut[local] = global`` (absent labels map to 0)."""
        lut = np.asarray(lut)
        keys = np.flatnonzero(lut)
        return cls(keys, lut[keys], lut.dtype)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Global label dtype."""
        return self.values.dtype

    @property
    def max_label(self) -> int:
        """The largest local label known (0 when none)."""
        return int(self.keys[-1]) if len(self.keys) else 0

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelTable):
            return NotImplemented
        return np.array_equal(self.keys, other.keys) and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        msg = (
            "a LabelTable is sparse: use table[labels] to map, table.keys / table.values for "
            "its entries, len(table) for its size"
        )
        raise ParameterTypeError(msg)

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self.keys, "values": self.values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.keys, self.values, self._dense = state["keys"], state["values"], None

    def _dense_table(self) -> NDArray[Any] | None:
        if self._dense is None and self.max_label < max(self.DENSE_LIMIT, 8 * len(self.keys)):
            dense = np.zeros(self.max_label + 1, dtype=self.values.dtype)
            dense[self.keys] = self.values
            self._dense = dense
        return self._dense

    def __getitem__(self, labels: Any) -> NDArray[Any]:
        """Global IDs of ``labels`` (any integer array); raises `LabelError` for unknown labels."""
        labels = np.asarray(labels)
        if labels.size == 0:
            return np.zeros(labels.shape, dtype=self.dtype)
        if int(labels.min()) < 0:
            msg = f"negative label {int(labels.min())}; labels must be >= 0"
            raise LabelError(msg)
        dense = self._dense_table()
        if dense is not None and int(labels.max()) < len(dense):
            out = dense[labels]
            unknown = (out == 0) & (labels != 0)
        else:
            idx = np.searchsorted(self.keys, labels.astype(self.keys.dtype, copy=False))
            idx = np.minimum(idx, max(len(self.keys) - 1, 0))
            found = (self.keys[idx] == labels) if len(self.keys) else np.zeros(labels.shape, bool)
            out = np.where(found, self.values[idx] if len(self.keys) else 0, 0).astype(self.dtype)
            unknown = ~found & (labels != 0)
        if unknown.any():
            bad = int(labels[unknown].flat[0])
            msg = (
                f"label {bad} is not in the mapping's table ({len(self)} labels, largest "
                f"{self.max_label}): was the mapping computed on this tileset?"
            )
            raise LabelError(msg)
        return out


@dataclass
class LabelMapping:
    """Per-tile lookup tables from local label IDs to global object IDs.

    Attributes
    ----------
    luts : list of LabelTable
        ``luts[t][local]`` is the global ID of tile ``t``'s label ``local``
        (0 stays 0; a label the tile did not have is an error). Sparse: sized
        by the labels present, whatever their values.
    n_objects : int
        Number of global objects; IDs are ``1 .. n_objects``.
    merges : ndarray of shape (m, 5)
        The kept links: ``(tile_a, label_a, tile_b, label_b, shared_voxels)``.
    tiles : list of dict
        Name and shape of each tile, to check the mapping is applied to the
        tileset it was computed on.
    rules : dict
        The linking rules used.
    """

    luts: list[LabelTable]
    n_objects: int
    merges: NDArray[np.int64]
    tiles: list[dict[str, Any]]
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Global label dtype: uint32, or uint64 when the count needs it."""
        return _global_dtype(self.n_objects)

    def lookup(self, tile: int, labels: NDArray[Any]) -> NDArray[Any]:
        """Map local labels of tile ``tile`` to global IDs."""
        try:
            return self.luts[tile][labels]
        except LabelError as exc:
            msg = f"tile {tile}: {exc}"
            raise LabelError(msg) from None

    def check(self, tiles: Sequence[Tile]) -> None:
        """Raise unless ``tiles`` are the ones this mapping was computed on, placed as then.

        Raises `LabelError` for other tiles (names, shapes) and
        `GridMismatchError` for the same tiles on another voxel grid.
        """
        got = [{"name": t.name, "shape": list(t.shape)} for t in tiles]
        if got != [{"name": t["name"], "shape": t["shape"]} for t in self.tiles]:
            msg = (
                f"this label mapping was computed on {len(self.tiles)} tiles "
                f"({[t['name'] for t in self.tiles][:3]}...), not on this tileset of "
                f"{len(got)} tiles ({[t['name'] for t in got][:3]}...)"
            )
            raise LabelError(msg)
        # the links hold for the placements they were found at: same voxel grid per tile
        for rec, t in zip(self.tiles, tiles, strict=True):
            if "affine" in rec and not np.allclose(rec["affine"], t.affine, rtol=0, atol=1e-6):
                then = np.asarray(rec["affine"], dtype=float)
                msg = (
                    f"tile {t.name!r} is placed on another grid than when this label mapping "
                    f"was computed (voxel size {_fmt(np.linalg.norm(then[:3, :3], axis=0))}"
                    f" um, voxel 0 at {_fmt(then[:3, 3])} um then; "
                    f"{_fmt(t.voxel_size)} um at {_fmt(t.offset)} um now): links found at one "
                    "placement do not hold at another; run dedup_labels on this tileset"
                )
                raise GridMismatchError(msg)

    def apply(self, tiles: Sequence[Tile]) -> list[Tile]:
        """The tiles reading global IDs (the mapping is applied lazily on read).

        `Tileset.relabel` wraps them in a `Tileset`; `Tileset.fuse_labels`
        applies a mapping itself with ``mapping=``.
        """
        import dataclasses

        self.check(tiles)
        return [
            dataclasses.replace(t, source=MappedSource(t.source, self.luts[i], self.dtype))
            for i, t in enumerate(tiles)
        ]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to a ``.npz`` file (LUTs, merges and JSON metadata)."""
        path = Path(path)
        meta = {"n_objects": self.n_objects, "tiles": self.tiles, "rules": self.rules}
        arrays: dict[str, Any] = {f"keys_{i}": lut.keys for i, lut in enumerate(self.luts)}
        arrays.update({f"values_{i}": lut.values for i, lut in enumerate(self.luts)})
        np.savez_compressed(path, merges=self.merges, meta=json.dumps(meta), **arrays)
        return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelMapping:
        """Load a mapping written by `save`."""
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            n = len(meta["tiles"])
            if "lut_0" in f.files:  # dense tables, as tilefuse < 0.2 saved them
                luts = [LabelTable.from_dense(f[f"lut_{i}"]) for i in range(n)]
            else:
                dt = _global_dtype(int(meta["n_objects"]))
                luts = [LabelTable(f[f"keys_{i}"], f[f"values_{i}"], dt) for i in range(n)]
            merges = f["merges"]
        return cls(luts, int(meta["n_objects"]), merges, meta["tiles"], meta["rules"])


class MappedSource(WrappedSource):
    """A label source read through a lookup table (local -> global IDs), lazily."""

    def __init__(self, source: Any, lut: LabelTable, dtype: Any) -> None:
        self.source, self.lut, self._dtype = source, lut, np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self.source.shape  # type: ignore[no-any-return]

    @property
    def dtype(self) -> np.dtype[Any]:
        """Global label dtype."""
        return self._dtype

    def _read(self, region: Region) -> NDArray[Any]:
        """Read a region and map it to global IDs."""
        return self.lut[self.source.read(region)].astype(self._dtype, copy=False)


# -- scanning ------------------------------------------------------------------------------
def _tile_labels(tile: Tile) -> NDArray[Any]:
    """Sorted unique nonzero labels of a tile, read slab by slab; checks the values."""
    check_label_dtype(tile.dtype, f"tile {tile.name!r}")
    present: list[NDArray[Any]] = []
    nz = tile.shape[0]
    for z0 in range(0, nz, _SLAB):
        data = tile.source.read(
            (slice(z0, min(z0 + _SLAB, nz)), slice(0, tile.shape[1]), slice(0, tile.shape[2]))
        )
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if lo < 0:
            msg = f"tile {tile.name!r} has negative label {lo}; labels must be >= 0"
            raise LabelError(msg)
        if hi < 1 << 26:  # presence by counting (linear) unless IDs are huge
            present.append(np.flatnonzero(np.bincount(data.ravel(), minlength=1)[1:]) + 1)
        else:
            u = np.unique(data)
            present.append(u[u > 0])
    return np.unique(np.concatenate(present)) if present else np.empty(0, dtype=np.int64)


def _overlap_pair_regions(
    ti: Tile, tj: Tile, slices_i: tuple[slice, ...]
) -> tuple[Region, Region] | None:
    """Voxel regions of tiles i and j that sample the same world voxels (nearest voxel)."""
    if not (ti.is_translation and tj.is_translation) or not np.allclose(
        ti.voxel_size, tj.voxel_size
    ):
        msg = (
            f"label deduplication needs axis-aligned tiles of one voxel size; tiles "
            f"{ti.name!r} and {tj.name!r} are not"
        )
        raise LabelError(msg)
    # the voxel correspondence label fusion uses too: j's voxel nearest to each i voxel centre
    per_axis = nearest_indices_separable(tj.affine, tj.shape, ti.affine, slices_i)
    ri, rj = [], []
    for s, (idx, valid) in zip(slices_i, per_axis, strict=True):
        hit = np.flatnonzero(valid)
        if not hit.size:
            return None
        a, b = int(hit[0]), int(hit[-1]) + 1
        ri.append(slice(s.start + a, s.start + b))
        rj.append(slice(int(idx[a]), int(idx[b - 1]) + 1))
    return (ri[0], ri[1], ri[2]), (rj[0], rj[1], rj[2])


def _pair_links(
    a: NDArray[Any], b: NDArray[Any], *, min_voxels: int, min_fraction: float, mutual: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Links ``(label_a, label_b, shared)`` between two co-registered label arrays."""
    a = a.ravel().astype(np.int64, copy=False)
    b = b.ravel().astype(np.int64, copy=False)
    both = (a > 0) & (b > 0)
    if not both.any():
        e = np.empty(0, np.int64)
        return e, e, e
    la, na = np.unique(a[a > 0], return_counts=True)
    lb, nb = np.unique(b[b > 0], return_counts=True)
    va, vb = a[both], b[both]
    if va.max() < 1 << 31 and vb.max() < 1 << 31:  # pack each pair into one int64 key
        keys, shared = np.unique((va << 32) | vb, return_counts=True)
        pa, pb = keys >> 32, keys & 0xFFFFFFFF
    else:
        pairs, shared = np.unique(np.stack([va, vb], axis=1), axis=0, return_counts=True)
        pa, pb = pairs[:, 0], pairs[:, 1]
    # sizes of each object inside the shared region (both tiles observed it)
    sa = na[np.searchsorted(la, pa)]
    sb = nb[np.searchsorted(lb, pb)]
    keep = (shared >= min_voxels) & (shared >= min_fraction * np.minimum(sa, sb))
    if mutual:
        # a's best partner is b and b's best partner is a (by shared voxels)
        order = np.lexsort((-shared, pa))
        best_a = np.zeros(len(pa), bool)
        first = np.r_[True, pa[order][1:] != pa[order][:-1]]
        best_a[order[first]] = True
        order = np.lexsort((-shared, pb))
        best_b = np.zeros(len(pb), bool)
        first = np.r_[True, pb[order][1:] != pb[order][:-1]]
        best_b[order[first]] = True
        keep &= best_a & best_b
    return pa[keep], pb[keep], shared[keep]


class _ScanTask:
    """Scan one tile's labels (sorted unique nonzero IDs)."""

    def __init__(self, tiles: list[Tile]) -> None:
        self.tiles = tiles

    def __call__(self, t: int) -> NDArray[Any]:
        return _tile_labels(self.tiles[t])


class _LinkTask:
    """Read one overlap from both tiles; the label pairs that pass the rules (or None)."""

    def __init__(
        self, tiles: list[Tile], overlaps: list[Any], min_voxels: int, min_fraction: float,
        mutual: bool,
    ) -> None:  # fmt: skip
        self.tiles, self.overlaps = tiles, overlaps
        self.min_voxels, self.min_fraction, self.mutual = min_voxels, min_fraction, mutual

    def __call__(self, k: int) -> tuple[NDArray[np.int64], ...] | None:
        o = self.overlaps[k]
        ti, tj = self.tiles[o.i], self.tiles[o.j]
        regions = _overlap_pair_regions(ti, tj, o.slices_i)
        if regions is None:
            return None
        la, lb, shared = _pair_links(
            ti.source.read(regions[0]),
            tj.source.read(regions[1]),
            min_voxels=self.min_voxels,
            min_fraction=self.min_fraction,
            mutual=self.mutual,
        )
        return (la, lb, shared) if la.size else None


def dedup_labels(
    tiles: Sequence[Tile],
    *,
    min_overlap_voxels: int = 1,
    min_overlap_fraction: float = 0.5,
    mutual_best: bool = False,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
) -> LabelMapping:
    """Give every object that spans several tiles one global ID.

    Parameters
    ----------
    tiles : sequence of Tile
        Axis-aligned tiles of per-tile label images (integers, 0 = background),
        each numbered independently.
    min_overlap_voxels : int
        A pair of labels from two overlapping tiles is linked only if they
        share at least this many voxels in the overlap region.
    min_overlap_fraction : float
        ... and the shared voxels are at least this fraction of the smaller of
        the two objects *within the overlap region* (so a large object is not
        penalised for its part outside the overlap).
    mutual_best : bool
        ... and each is the other's best partner (most shared voxels). Off by
        default: an object that leaves a tile and comes back is two labels in
        that tile but one in its neighbour, and both pieces must link to it.
        Two distinct objects that merely touch in the overlap, or whose
        borders disagree by a few voxels, are kept apart by
        ``min_overlap_fraction`` already.
    workers : int, optional
        Threads for the scans (default: the CPUs available).
    client : distributed.Client, optional
        Scan tiles and link overlaps on this dask cluster instead; each task
        reads one tile (slab by slab) or one overlap.
    progress : bool
        Show progress bars.

    Returns
    -------
    LabelMapping
        Per-tile lookup tables (global IDs contiguous from 1; uint32, or
        uint64 when the count needs it), the object count and the kept links.

    Raises
    ------
    LabelError
        If a tile has a non-integer dtype or negative labels, or tiles are
        rotated or of different voxel sizes.
    """
    tiles = list(tiles)
    present = map_in_order(
        _ScanTask(tiles),
        len(tiles),
        workers=workers,
        client=client,
        progress=progress,
        desc="scan labels",
        unit="tile",
    )
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in present])]).astype(np.int64)
    n_nodes = int(offsets[-1])
    edges_a: list[NDArray[np.int64]] = []
    edges_b: list[NDArray[np.int64]] = []
    merges: list[NDArray[np.int64]] = []
    overlaps = Layout(tiles).overlaps()
    link_task = _LinkTask(tiles, overlaps, min_overlap_voxels, min_overlap_fraction, mutual_best)
    found = map_in_order(
        link_task,
        len(overlaps),
        workers=workers,
        client=client,
        progress=progress,
        desc="link overlaps",
        unit="pair",
    )
    for o, link in zip(overlaps, found, strict=True):  # overlap order: deterministic merges
        if link is None:
            continue
        la, lb, shared = link
        # node index = tile offset + rank of the label among the tile's labels
        edges_a.append(offsets[o.i] + np.searchsorted(present[o.i], la))
        edges_b.append(offsets[o.j] + np.searchsorted(present[o.j], lb))
        merges.append(
            np.stack([np.full_like(la, o.i), la, np.full_like(lb, o.j), lb, shared], axis=1)
        )
    if edges_a:
        ea, eb = np.concatenate(edges_a), np.concatenate(edges_b)
        graph = sparse.coo_matrix((np.ones(len(ea), np.int8), (ea, eb)), shape=(n_nodes, n_nodes))
        _, comp = connected_components(graph, directed=False)
    else:
        comp = np.arange(n_nodes)
    # number components in order of their first node (tile order, then label order): deterministic
    _, first_idx, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(len(first_idx), np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(len(first_idx))
    global_id = rank[inverse] + 1
    n_objects = len(first_idx)
    dt = _global_dtype(n_objects)
    luts = [
        LabelTable(p, global_id[offsets[t] : offsets[t + 1]], dt) for t, p in enumerate(present)
    ]
    logger.info(
        "%d labels in %d tiles -> %d objects (%d links kept)",
        n_nodes,
        len(tiles),
        n_objects,
        sum(len(m) for m in merges),
    )
    return LabelMapping(
        luts,
        n_objects,
        np.concatenate(merges) if merges else np.empty((0, 5), np.int64),
        [
            {"name": t.name, "shape": list(t.shape), "affine": np.round(t.affine, 9).tolist()}
            for t in tiles
        ],
        {
            "min_overlap_voxels": min_overlap_voxels,
            "min_overlap_fraction": min_overlap_fraction,
            "mutual_best": mutual_best,
        },
    )
