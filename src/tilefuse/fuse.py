"""Chunked fusion: plan output blocks -> gather tiles -> blend -> write.

The unit of work is one output block aligned to the writer's shard (or chunk)
grid; each block is rendered and written exactly once by one worker, so memory
is O(block x workers) whatever the size of the volume.

Translation-only tiles at the output voxel size take a fast path: integer
offsets are copied voxel for voxel; fractional offsets are resampled with
separable linear interpolation. Other affines (rotation, shear, another voxel
size) are resampled trilinearly per block.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.blend import BLEND_MODES, ramp
from tilefuse.errors import EmptyTilesetError, IncompatibleTilesError, OutputExistsError, StoreError
from tilefuse.geometry import INTEGER_TOL, is_translation
from tilefuse.io.ome_zarr import MultiScaleGroup, _StoreTask, default_chunks
from tilefuse.parallel import imap_unordered

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = ["FusionPlan", "OutputGrid", "fuse_tiles"]

logger = logging.getLogger(__name__)

Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class OutputGrid:
    """The fused volume's voxel grid: voxel ``j`` is centred at ``origin + j * voxel_size``.

    ``origin`` is the centre of voxel 0 (NGFF's ``translation``); voxel ``j``
    covers ``origin + (j -+ 1/2) * voxel_size``.
    """

    origin: tuple[float, float, float]
    voxel_size: tuple[float, float, float]
    shape: tuple[int, int, int]

    @classmethod
    def covering(cls, tiles: Sequence[Tile], voxel_size: ArrayLike) -> OutputGrid:
        """The smallest grid at ``voxel_size`` whose voxels cover every tile's box.

        The first output voxel's extent starts at the boxes' lower corner, so
        tiles at ``voxel_size`` on a common lattice keep their voxel centres.
        """
        vs = np.asarray(voxel_size, dtype=float)
        lo = np.min([t.box[0] for t in tiles], axis=0)
        hi = np.max([t.box[1] for t in tiles], axis=0)
        shape = np.maximum(np.ceil((hi - lo) / vs - INTEGER_TOL), 1).astype(int)
        return cls(
            tuple(float(v) for v in lo + vs / 2),  # type: ignore[arg-type]
            tuple(float(v) for v in vs),  # type: ignore[arg-type]
            tuple(int(s) for s in shape),  # type: ignore[arg-type]
        )

    def world_box(self, region: Region) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World box ``[lo, hi)`` spanned by the voxels of a region of the grid."""
        o, v = np.asarray(self.origin), np.asarray(self.voxel_size)
        start = np.array([r.start for r in region], dtype=float) - 0.5
        stop = np.array([r.stop for r in region], dtype=float) - 0.5
        return o + start * v, o + stop * v


class FusionPlan:
    """Everything needed to render any output block; picklable for dask workers.

    Parameters
    ----------
    tiles : sequence of Tile
        Tiles in priority order (for ``overwrite`` the last wins by default).
    grid : OutputGrid
        Output voxel grid.
    blend : {"overwrite", "max", "mean", "linear"}
        How overlapping tiles combine.
    blend_width : array_like of 3 floats
        Ramp width (z, y, x) in micrometres for ``linear``.
    priority : {"last", "first"}
        For ``overwrite``: which tile wins where several have data.
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        grid: OutputGrid,
        *,
        blend: str = "linear",
        blend_width: ArrayLike = (0.0, 0.0, 0.0),
        priority: Literal["last", "first"] = "last",
    ) -> None:
        if not tiles:
            msg = "cannot fuse an empty tileset"
            raise EmptyTilesetError(msg)
        if blend not in BLEND_MODES:
            msg = f"blend must be one of {BLEND_MODES}, got {blend!r}"
            raise ValueError(msg)
        if priority not in ("last", "first"):
            msg = f"priority must be 'last' or 'first', got {priority!r}"
            raise ValueError(msg)
        self.tiles = tuple(tiles)
        self.grid = grid
        self.blend = blend
        self.blend_width = np.asarray(blend_width, dtype=float)
        self.priority = priority
        self.dtype = np.dtype(self.tiles[0].dtype)
        self.n_channels = self.tiles[0].n_channels
        for t in self.tiles:
            if t.n_channels != self.n_channels or np.dtype(t.dtype) != self.dtype:
                msg = (
                    f"tile {t.name!r} has {t.n_channels} channel(s) of {t.dtype}; "
                    f"tile {self.tiles[0].name!r} has {self.n_channels} of {self.dtype}"
                )
                raise IncompatibleTilesError(msg)
        boxes = [t.box for t in self.tiles]
        self._lo = np.array([b[0] for b in boxes])
        self._hi = np.array([b[1] for b in boxes])
        wide = self.dtype.itemsize >= 4 or not np.issubdtype(self.dtype, np.number)
        self._acc = np.float64 if wide else np.float32

    @property
    def shape(self) -> tuple[int, ...]:
        """Output shape ``(c, z, y, x)``."""
        return (self.n_channels, *self.grid.shape)

    def fingerprint(self) -> str:
        """A hash of everything that determines the output pixels."""
        spec = {
            "grid": [self.grid.origin, self.grid.voxel_size, self.grid.shape],
            "blend": self.blend,
            "width": self.blend_width.tolist(),
            "priority": self.priority,
            "dtype": self.dtype.str,
            "tiles": [[t.name, t.shape, t.affine.round(9).tolist()] for t in self.tiles],
        }
        # corrected pixels differ: a corrected fusion must not resume an uncorrected one
        corr = [t.metadata.get("intensity_correction", {}).get("digest") for t in self.tiles]
        if any(corr):
            spec["corrections"] = corr
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def tiles_in(self, region: Region) -> NDArray[np.intp]:
        """Indices of tiles whose boxes intersect a region of the output grid."""
        lo, hi = self.grid.world_box(region)
        hit = np.all((self._lo < hi) & (lo < self._hi), axis=1)
        return np.flatnonzero(hit)

    # -- rendering ------------------------------------------------------------------
    def render(self, region: Region) -> NDArray[Any]:
        """Fuse one output region; returns ``(c, z, y, x)`` in the tiles' dtype."""
        shape = tuple(r.stop - r.start for r in region)
        idx = self.tiles_in(region)
        if self.priority == "first" and self.blend == "overwrite":
            idx = idx[::-1]
        c = self.n_channels
        if self.blend == "overwrite":
            out = np.zeros((c, *shape), dtype=self.dtype)
            for i in idx:
                for sub, data, mask, _ in self._samples(self.tiles[i], region):
                    _put(out, sub, self._cast(data), mask)
            return out
        if self.blend == "centre":
            # carry each tile's centre in the weight slot of its contribution
            parts = [
                (sub, data, mask, (self._lo[i] + self._hi[i]) / 2)
                for i in idx
                for sub, data, mask, _ in self._samples(self.tiles[i], region)
            ]
            if all(mask is None for _, _, mask, _ in parts):
                return self._blend_cells(parts, shape, region)
            return self._nearest_centre(parts, region)
        if self.blend == "max":
            out = np.zeros((c, *shape), dtype=self._acc)
            covered = np.zeros(shape, dtype=bool)
            out[...] = -np.inf
            for i in idx:
                for sub, data, mask, _ in self._samples(self.tiles[i], region):
                    view = out[(slice(None), *sub)]
                    cur = np.maximum(view, data)
                    view[...] = cur if mask is None else np.where(mask, cur, view)
                    covered[sub] |= True if mask is None else mask
            out[:, ~covered] = 0
            return self._cast(out)
        parts = [p for i in idx for p in self._samples(self.tiles[i], region)]
        if all(mask is None for _, _, mask, _ in parts):
            return self._blend_cells(parts, shape, region)
        acc = np.zeros((c, *shape), dtype=self._acc)
        wsum = np.zeros(shape, dtype=self._acc)
        for sub, data, mask, w in parts:
            w = self._weight(w)
            if mask is not None:
                w = w * mask
            acc[(slice(None), *sub)] += data * w
            wsum[sub] += w
        np.divide(acc, wsum, out=acc, where=wsum > 0)
        return self._cast(acc)

    def _closest(
        self, cover: list[Any], rel: list[Region], cell: Region, region: Region
    ) -> NDArray[Any]:
        """For one cell: each voxel from the contribution whose tile centre is nearest."""
        origin, vs = np.asarray(self.grid.origin), np.asarray(self.grid.voxel_size)
        pos = [
            origin[ax] + (np.arange(cell[ax].start, cell[ax].stop) + region[ax].start) * vs[ax]
            for ax in range(3)
        ]
        dist = np.stack(
            [
                (pos[0] - c[0])[:, None, None] ** 2
                + (pos[1] - c[1])[None, :, None] ** 2
                + (pos[2] - c[2])[None, None, :] ** 2
                for *_, c in cover
            ]
        )
        pick = np.argmin(dist, axis=0)  # ties: the first tile
        stack = np.stack([p[1][(slice(None), *r)] for p, r in zip(cover, rel, strict=True)])
        return self._cast(np.take_along_axis(stack, pick[None, None], axis=0)[0])

    def _nearest_centre(self, parts: list[Any], region: Region) -> NDArray[Any]:
        """Each voxel from the covering contribution whose tile centre is nearest (ties: first).

        ``parts`` are ``(sub, data, mask, centre)`` (the general path, where some
        contributions carry masks).
        """
        shape = tuple(r.stop - r.start for r in region)
        out = np.zeros((self.n_channels, *shape), dtype=self.dtype)
        best = np.full(shape, np.inf)
        origin, vs = np.asarray(self.grid.origin), np.asarray(self.grid.voxel_size)
        for sub, data, mask, centre in parts:
            d = np.zeros((1, 1, 1))
            for ax in range(3):
                j = np.arange(sub[ax].start, sub[ax].stop) + region[ax].start
                sh = [1, 1, 1]
                sh[ax] = j.size
                d = d + ((origin[ax] + j * vs[ax] - centre[ax]) ** 2).reshape(sh)
            closer = d < best[sub]
            if mask is not None:
                closer &= mask
            best[sub] = np.where(closer, d, best[sub])
            view = out[(slice(None), *sub)]
            view[...] = np.where(closer, self._cast(data), view)
        return out

    def _weight(self, w: Any, cell: Region | None = None) -> NDArray[Any]:
        """A contribution's weight (on ``cell``, relative to its sub-region), broadcastable."""
        if self.blend == "mean" or w is None:
            return np.ones((1, 1, 1), dtype=self._acc)
        if isinstance(w, tuple):  # separable ramps: outer product over the cell only
            out = np.ones((1, 1, 1), dtype=self._acc)
            for ax, r in enumerate(w):
                seg = r if cell is None else r[cell[ax]]
                sh = [1, 1, 1]
                sh[ax] = seg.size
                out = out * seg.reshape(sh)
            return out
        return w if cell is None else w[cell]

    def _blend_cells(
        self, parts: list[Any], shape: tuple[int, ...], region: Region
    ) -> NDArray[Any]:
        """Blend axis-aligned contributions cell by cell.

        The block is cut at every contribution's border into cells covered by
        a fixed set of tiles: cells covered once are copied as they are (no
        float work), only cells covered several times are blended.
        """
        out = np.zeros((self.n_channels, *shape), dtype=self.dtype)
        cuts = [
            sorted({0, shape[ax]} | {b for sub, *_ in parts for b in (sub[ax].start, sub[ax].stop)})
            for ax in range(3)
        ]
        for cz in zip(cuts[0][:-1], cuts[0][1:], strict=True):
            for cy in zip(cuts[1][:-1], cuts[1][1:], strict=True):
                for cx in zip(cuts[2][:-1], cuts[2][1:], strict=True):
                    cell = (slice(*cz), slice(*cy), slice(*cx))
                    cover = [p for p in parts if _contains(p[0], cell)]
                    if not cover:
                        continue
                    rel = [
                        tuple(
                            slice(c.start - s.start, c.stop - s.start)
                            for c, s in zip(cell, p[0], strict=True)
                        )
                        for p in cover
                    ]
                    target = out[(slice(None), *cell)]
                    if len(cover) == 1:
                        target[...] = self._cast(cover[0][1][(slice(None), *rel[0])])
                        continue
                    if self.blend == "centre":
                        target[...] = self._closest(cover, rel, cell, region)
                        continue
                    acc = np.zeros(target.shape, dtype=self._acc)
                    wsum = np.zeros((1, 1, 1), dtype=self._acc)
                    for (_, data, _, w), r in zip(cover, rel, strict=True):
                        wr = self._weight(w, r)
                        acc += data[(slice(None), *r)] * wr
                        wsum = wsum + wr
                    target[...] = self._cast(acc / wsum)
        return out

    def _cast(self, data: NDArray[Any]) -> NDArray[Any]:
        if data.dtype == self.dtype:
            return data
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            data = np.clip(np.rint(data), info.min, info.max)
        return data.astype(self.dtype)

    def _samples(
        self, tile: Tile, region: Region
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, NDArray[Any]]]:
        """Resample a tile onto an output region.

        Returns a list of ``(sub_region, data, mask, weight)``: ``sub_region``
        is relative to ``region``; ``data`` is ``(c, ...)`` on that sub-region
        (native dtype on the exact integer path, float otherwise); ``mask`` is
        None when every voxel of the sub-region is covered.
        """
        vs = np.asarray(self.grid.voxel_size)
        if is_translation(tile.affine) and np.allclose(tile.voxel_size, vs, rtol=1e-9):
            return self._samples_translation(tile, region)
        return self._samples_affine(tile, region)

    def _samples_translation(
        self, tile: Tile, region: Region
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, NDArray[Any]]]:
        origin, vs = np.asarray(self.grid.origin), np.asarray(self.grid.voxel_size)
        d = (origin - tile.offset) / vs  # tile index of output voxel 0
        sub, read, frac = [], [], []
        for ax in range(3):
            n = tile.shape[ax]
            da = d[ax]
            if abs(da - round(da)) < INTEGER_TOL:
                da = float(round(da))
            # output j (centre at tile index j + da) is covered when -1/2 <= j + da < n - 1/2
            jlo = max(region[ax].start, int(np.ceil(-0.5 - da - INTEGER_TOL)))
            jhi = min(region[ax].stop, int(np.ceil(n - 0.5 - da - INTEGER_TOL)))
            if jhi <= jlo:
                return []
            t0 = jlo + da
            base = int(np.floor(t0 + INTEGER_TOL))
            f = t0 - base if abs(t0 - base) > INTEGER_TOL else 0.0
            stop = base + (jhi - jlo) + (1 if f else 0)
            sub.append(slice(jlo - region[ax].start, jhi - region[ax].start))
            read.append((base, stop))
            frac.append(f)
        # within half a voxel outside the first/last centre: the edge voxel's value
        data = tile.source.read(
            tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(read, tile.shape, strict=True))  # type: ignore[arg-type]
        )
        pad = [(0, 0)] + [
            (max(-a, 0), max(b - n, 0)) for (a, b), n in zip(read, tile.shape, strict=True)
        ]
        if any(p != (0, 0) for p in pad):
            data = np.pad(data, pad, mode="edge")
        if any(frac):
            data = data.astype(self._acc, copy=False)
            for ax, f in enumerate(frac):
                if f:
                    data = _lerp(data, ax + 1, f, sub[ax].stop - sub[ax].start)
        weight = self._weights_translation(tile, d, region, sub)
        return [((sub[0], sub[1], sub[2]), data, None, weight)]

    def _weights_translation(
        self, tile: Tile, d: NDArray[np.float64], region: Region, sub: list[slice]
    ) -> tuple[NDArray[Any], ...] | None:
        """Separable linear weights: one 1D ramp per axis (None when not blending)."""
        if self.blend != "linear":
            return None
        ramps = []
        for ax in range(3):
            j = np.arange(sub[ax].start, sub[ax].stop) + region[ax].start
            r = ramp(j + d[ax], tile.shape[ax], tile.voxel_size[ax], self.blend_width[ax])
            ramps.append(r.astype(self._acc))
        return tuple(ramps)

    def _samples_affine(
        self, tile: Tile, region: Region
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, NDArray[Any]]]:
        origin, vs = np.asarray(self.grid.origin), np.asarray(self.grid.voxel_size)
        grid = np.meshgrid(*[np.arange(r.start, r.stop) for r in region], indexing="ij")
        world = np.stack([origin[a] + grid[a] * vs[a] for a in range(3)])
        inv = np.linalg.inv(tile.affine)
        t = np.einsum("ij,j...->i...", inv[:3, :3], world) + inv[:3, 3].reshape(3, 1, 1, 1)
        n = np.array(tile.shape)
        mask = np.ones(t.shape[1:], dtype=bool)
        for ax in range(3):
            tt = t[ax]
            tt[np.abs(tt - np.round(tt)) < INTEGER_TOL] = np.round(
                tt[np.abs(tt - np.round(tt)) < INTEGER_TOL]
            )
            # output voxel centres inside the tile's box: [-1/2, n - 1/2) in tile indices
            mask &= (tt >= -0.5) & (tt < n[ax] - 0.5)
        if not mask.any():
            return []
        lo = np.maximum(np.floor(t[:, mask].min(axis=1)).astype(int), 0)
        hi = np.minimum(np.floor(t[:, mask].max(axis=1)).astype(int) + 2, n)
        data = tile.source.read(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))  # type: ignore[arg-type]
        from scipy import ndimage  # only the general-affine path needs it (slow to import)

        coords = t - lo.reshape(3, 1, 1, 1)
        out = np.zeros((data.shape[0], *mask.shape), dtype=self._acc)
        for ch in range(data.shape[0]):
            out[ch] = ndimage.map_coordinates(
                data[ch].astype(self._acc), coords, order=1, mode="nearest"
            )
        if self.blend == "linear":
            w = np.ones(mask.shape, dtype=self._acc)
            for ax in range(3):
                w *= ramp(t[ax], int(n[ax]), tile.voxel_size[ax], self.blend_width[ax])
        else:
            w = np.ones(mask.shape, dtype=self._acc)
        full = (slice(0, mask.shape[0]), slice(0, mask.shape[1]), slice(0, mask.shape[2]))
        return [(full, out, mask, w)]


def _lerp(data: NDArray[Any], axis: int, f: float, n_out: int) -> NDArray[Any]:
    """Linear interpolation at ``i + f`` along ``axis``; clamps at the far edge."""
    a = np.take(data, np.arange(n_out), axis=axis)
    idx = np.minimum(np.arange(1, n_out + 1), data.shape[axis] - 1)
    b = np.take(data, idx, axis=axis)
    return a * (1 - f) + b * f


def _contains(sub: Region, cell: Region) -> bool:
    return all(s.start <= c.start and c.stop <= s.stop for s, c in zip(sub, cell, strict=True))


def _put(
    out: NDArray[Any], sub: Region, data: NDArray[Any], mask: NDArray[np.bool_] | None
) -> None:
    view = out[(slice(None), *sub)]
    if mask is None:
        view[...] = data
    else:
        view[:, mask] = data[:, mask]


def default_blend_width(tiles: Sequence[Tile]) -> NDArray[np.float64]:
    """Default ramp width (z, y, x): 10 % of the median tile extent in micrometres."""
    ext = np.median([np.asarray(t.shape) * t.voxel_size for t in tiles], axis=0)
    return 0.1 * ext


class _BlockToStore(_StoreTask):
    """Picklable task: render one block and write it (and its marker) to a store."""

    def __init__(self, plan: FusionPlan, path: str) -> None:
        self.plan, self.path = plan, path

    def __call__(self, block: tuple[int, int, int]) -> None:
        group = self.group()
        region = group.block_region(block, 0)
        data = self.plan.render(region)
        if group[0].ndim == 3:
            data = data[0]
        group.write_block(region, data, 0)
        group.mark_done(block, 0)


class _BlockToMemory:
    """Task: render one block and return it."""

    def __init__(self, plan: FusionPlan, block_shape: Sequence[int]) -> None:
        self.plan, self.block_shape = plan, tuple(block_shape)

    def region(self, block: tuple[int, int, int]) -> Region:
        r = [
            slice(i * b, min((i + 1) * b, s))
            for i, b, s in zip(block, self.block_shape, self.plan.grid.shape, strict=True)
        ]
        return (r[0], r[1], r[2])

    def __call__(self, block: tuple[int, int, int]) -> NDArray[Any]:
        return self.plan.render(self.region(block))


def fuse_tiles(
    plan: FusionPlan,
    output: str | os.PathLike[str] | None = None,
    *,
    levels: int = 1,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | bool | None = True,
    version: Literal["0.4", "0.5"] = "0.5",
    compression: Literal["default", "fast", "archive", "none"] = "default",
    name: str | None = None,
    channel_names: Sequence[str] | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
    overwrite: bool = False,
    kind: Literal["image", "label"] = "image",
) -> NDArray[Any] | MultiScaleGroup:
    """Run a fusion plan into memory or into an OME-Zarr store.

    See `tilefuse.Tileset.fuse` for the parameters. A store whose previous
    write of the same plan was interrupted is resumed: blocks already written
    are skipped.
    """
    if output is None:
        return _fuse_to_memory(plan, chunks, workers=workers, client=client, progress=progress)
    path = Path(output)
    fp = plan.fingerprint()
    group = _resume_or_create(
        plan,
        path,
        fp,
        overwrite=overwrite,
        chunks=chunks,
        shards=shards,
        version=version,
        compression=compression,
        name=name,
        channel_names=channel_names,
        kind=kind,
    )
    return fuse_into(plan, group, levels=levels, workers=workers, client=client, progress=progress)


def fuse_into(
    plan: FusionPlan,
    group: MultiScaleGroup,
    *,
    levels: int = 1,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
) -> MultiScaleGroup:
    """Render every level-0 block of an existing group not yet done, build its pyramid, finish it.

    The group's level-0 grid must be the plan's output grid.
    """
    if tuple(group[0].shape[-3:]) != plan.grid.shape:
        msg = f"{group.path}: level 0 is {group[0].shape}, the fusion grid is {plan.grid.shape}"
        raise ValueError(msg)
    todo = [b for b in group.blocks(0) if b not in group.done_blocks(0)]
    if len(todo) < len(group.blocks(0)):
        logger.info(
            "resuming %s: %d of %d blocks left", group.path, len(todo), len(group.blocks(0))
        )
    task = _BlockToStore(plan, str(group.path))
    for _ in imap_unordered(
        task, todo, workers=workers, client=client, progress=progress, desc="fuse"
    ):
        pass
    for lvl in range(1, levels):
        group.add_downsample_level(lvl, workers=workers, client=client, progress=progress)
    group.mark_complete()
    return group


def _fuse_to_memory(
    plan: FusionPlan,
    chunks: Sequence[int] | None,
    *,
    workers: int | None,
    client: Any,
    progress: bool,
) -> NDArray[Any]:
    out = np.zeros(plan.shape, dtype=plan.dtype)
    bs = (
        tuple(chunks)
        if chunks
        else tuple(min(s, b) for s, b in zip(plan.grid.shape, (64, 512, 512), strict=True))
    )
    task = _BlockToMemory(plan, bs)
    blocks = list(np.ndindex(*[-(-s // b) for s, b in zip(plan.grid.shape, bs, strict=True)]))
    for block, data in imap_unordered(
        task, blocks, workers=workers, client=client, progress=progress, desc="fuse"
    ):
        out[(slice(None), *task.region(block))] = data
    return out[0] if plan.n_channels == 1 else out


def _resume_or_create(
    plan: FusionPlan, path: Path, fingerprint: str, *, overwrite: bool, **kwargs: Any
) -> MultiScaleGroup:
    """Open an interrupted store of the same plan, or create a new one."""
    if path.exists() and not overwrite:
        try:
            group = MultiScaleGroup.open(path, mode="r+")
        except StoreError:
            group = None
        if group is not None and not group.is_complete:
            if group.get_attribute("fingerprint") == fingerprint:
                return group
            msg = f"{path} holds an unfinished fusion of different tiles or settings"
            raise OutputExistsError(msg + "; pass overwrite=True to replace it")
    shape = plan.shape if plan.n_channels > 1 else plan.grid.shape
    chunks = kwargs.pop("chunks") or default_chunks(plan.grid.shape, plan.dtype)
    names = kwargs.pop("channel_names") or (
        list(plan.tiles[0].channels) if plan.n_channels > 1 else None
    )
    group = MultiScaleGroup.create(
        path,
        shape=shape,
        dtype=plan.dtype,
        voxel_size=plan.grid.voxel_size,
        origin=plan.grid.origin,
        chunks=chunks,
        channel_names=names,
        overwrite=overwrite,
        **kwargs,
    )
    group.set_attribute("fingerprint", fingerprint)
    return group
