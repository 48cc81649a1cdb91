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

import contextlib
import errno
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.blend import Blend, BlockContext, Part, get_blend, ramp
from tilefuse.errors import (
    EmptyTilesetError,
    IncompatibleTilesError,
    ParameterError,
    TilefuseError,
    WriteError,
)
from tilefuse.geometry import INTEGER_TOL, is_translation, nearest_index
from tilefuse.options import ExecOptions, FusionOptions
from tilefuse.parallel import imap_unordered
from tilefuse.preflight import preflight, source_identity
from tilefuse.writers import BlockGrid, BlockWriter, VolumeSpec

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = ["FusionPlan", "OutputGrid", "default_blend_width", "fuse_tiles"]

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
        """The grid at ``voxel_size`` of every voxel whose centre lies in the tiles' boxes.

        The first output voxel's extent starts at the boxes' lower corner (so
        tiles at ``voxel_size`` on a common lattice keep their voxel centres);
        the last is the last whose centre is still inside the boxes' union.
        """
        vs = np.asarray(voxel_size, dtype=float)
        lo = np.min([t.box[0] for t in tiles], axis=0)
        hi = np.max([t.box[1] for t in tiles], axis=0)
        # centres lo + (j + 1/2) vs < hi  ->  j < (hi - lo) / vs - 1/2
        shape = np.maximum(np.ceil((hi - lo) / vs - 0.5 - INTEGER_TOL), 1).astype(int)
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
    blend : str or Blend
        How overlapping tiles combine: a registered mode name (see
        `tilefuse.blend.blend_names`) or a `tilefuse.blend.Blend` object.
    blend_width : array_like of 3 floats
        Ramp width (z, y, x) in micrometres for ``linear``.
    priority : {"last", "first"}
        For ``overwrite``: which tile wins where several have data.
    interpolation : {"linear", "nearest"}
        Sampling between a tile's voxel centres: linear (in float: float64, or
        float32 for 8/16-bit data) or nearest (the tile voxel whose extent
        holds the output voxel's centre, `tilefuse.geometry.nearest_indices`:
        values copied, 64-bit integers exact; labels always use it).

    Notes
    -----
    Output voxel ``j`` takes the tiles' values at its centre. Tiles at the
    output voxel size on the output lattice are copied voxel for voxel
    (native dtype: exact for any integer with ``overwrite``, ``max`` and
    ``centre``); ``mean`` and ``linear`` blends and linear resampling compute
    in float and round back to the tile dtype.
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        grid: OutputGrid,
        *,
        blend: str | Blend = "linear",
        blend_width: ArrayLike = (0.0, 0.0, 0.0),
        priority: Literal["last", "first"] = "last",
        interpolation: Literal["linear", "nearest"] = "linear",
    ) -> None:
        if not tiles:
            msg = "cannot fuse an empty tileset"
            raise EmptyTilesetError(msg)
        if priority not in ("last", "first"):
            msg = f"priority must be 'last' or 'first', got {priority!r}"
            raise ParameterError(msg)
        self.tiles = tuple(tiles)
        self.grid = grid
        self.blend_mode = get_blend(blend)
        self.blend = self.blend_mode.name
        self.blend_width = np.asarray(blend_width, dtype=float)
        self.priority = priority
        if interpolation not in ("linear", "nearest"):
            msg = f"interpolation must be 'linear' or 'nearest', got {interpolation!r}"
            raise ParameterError(msg)
        self.interpolation = interpolation
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

    @classmethod
    def from_options(
        cls,
        tiles: Sequence[Tile],
        options: FusionOptions,
        *,
        voxel_size: ArrayLike | None = None,
        grid: OutputGrid | None = None,
    ) -> FusionPlan:
        """The plan for `FusionOptions`.

        Parameters
        ----------
        tiles : sequence of Tile
            Tiles in priority order.
        options : FusionOptions
            Blend mode, ramp width (default 10 % of the median tile extent),
            priority, output voxel size.
        voxel_size : array_like of 3 floats, optional
            Output voxel size when ``options.voxel_size`` is None (default: the
            first tile's).
        grid : OutputGrid, optional
            A given output grid (e.g. an existing image's); otherwise the grid
            covering every tile at the voxel size.
        """
        if not tiles:
            msg = "cannot fuse an empty tileset"
            raise EmptyTilesetError(msg)
        if grid is None:
            vs = options.voxel_size if options.voxel_size is not None else voxel_size
            if vs is None:
                vs = tiles[0].voxel_size
            grid = OutputGrid.covering(tiles, np.asarray(vs, dtype=float))
        if options.blend_width is None:
            width = default_blend_width(tiles)
        else:
            width = np.broadcast_to(np.asarray(options.blend_width, dtype=float), (3,))
        return cls(
            tiles,
            grid,
            blend=options.blend,
            blend_width=width,
            priority=options.priority,
            interpolation=options.interpolation,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Output shape ``(c, z, y, x)``."""
        return (self.n_channels, *self.grid.shape)

    def fingerprint_parts(self) -> dict[str, str]:
        """One digest per thing the output pixels depend on, named for the user.

        The tiles' files (path, size, modification time), their sources'
        settings (channel selection, downscaling, label mapping by content),
        placements, blend settings, the output grid and dtype. A resumed
        fusion must match every part; a mismatch names the parts that changed.
        """
        parts: dict[str, Any] = {
            "output grid": [self.grid.origin, self.grid.voxel_size, self.grid.shape],
            "blend settings": [
                self.blend,
                self.blend_width.tolist(),
                self.priority,
                self.interpolation,
            ],
            "dtype": self.dtype.str,
            "tile placement": [[t.name, t.shape, t.affine.round(9).tolist()] for t in self.tiles],
            "tile files and channels": [source_identity(t.source) for t in self.tiles],
        }
        # corrected pixels differ: a corrected fusion must not resume an uncorrected one
        corr = [t.metadata.get("intensity_correction", {}).get("digest") for t in self.tiles]
        if any(corr):
            parts["intensity corrections"] = corr
        return {
            k: hashlib.sha1(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
            for k, v in parts.items()
        }

    def fingerprint(self) -> str:
        """A hash of everything that determines the output pixels (see `fingerprint_parts`)."""
        parts = json.dumps(self.fingerprint_parts(), sort_keys=True)
        return hashlib.sha1(parts.encode()).hexdigest()

    def tiles_in(self, region: Region) -> NDArray[np.intp]:
        """Indices of tiles whose boxes intersect a region of the output grid."""
        lo, hi = self.grid.world_box(region)
        hit = np.all((self._lo < hi) & (lo < self._hi), axis=1)
        return np.flatnonzero(hit)

    def spec(self) -> VolumeSpec:
        """What a `tilefuse.writers.BlockWriter` needs to know about the output."""
        names = tuple(self.tiles[0].channels) if self.n_channels > 1 else None
        return VolumeSpec(
            shape=self.shape,  # type: ignore[arg-type]
            dtype=self.dtype,
            origin=self.grid.origin,
            voxel_size=self.grid.voxel_size,
            channel_names=names,
            fingerprint=self.fingerprint(),
            # tiles whose voxel size has no unit (pixel) make an output without one
            unit=None
            if all(t.metadata.get("unit") == "pixel" for t in self.tiles)
            else "micrometer",
            fingerprint_parts=self.fingerprint_parts(),
        )

    # -- rendering ------------------------------------------------------------------
    def render(self, region: Region) -> NDArray[Any]:
        """Fuse one output region; returns ``(c, z, y, x)`` in the tiles' dtype."""
        idx = self.blend_mode.order(self.tiles_in(region), self.priority)
        parts = [
            Part(sub, data, mask, w, int(i))
            for i in idx
            for sub, data, mask, w in self._samples(self.tiles[i], region)
        ]
        return self.blend_mode.combine(parts, self.context(region))

    def context(self, region: Region) -> BlockContext:
        """What the blend mode may know about an output region."""
        return BlockContext(
            region=region,
            n_channels=self.n_channels,
            dtype=self.dtype,
            acc=self._acc,
            origin=np.asarray(self.grid.origin),
            voxel_size=np.asarray(self.grid.voxel_size),
            tile_lo=self._lo,
            tile_hi=self._hi,
        )

    def _samples(
        self, tile: Tile, region: Region
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, Any]]:
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
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, Any]]:
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
        if any(frac) and self.interpolation == "nearest":
            # the tile voxel whose extent holds each output centre; values copied, never mixed
            for ax, f in enumerate(frac):
                if f:
                    j = np.arange(sub[ax].stop - sub[ax].start) + f  # relative to ``base``
                    data = np.take(data, nearest_index(j), axis=ax + 1)
        elif any(frac):
            data = data.astype(self._acc, copy=False)
            for ax, f in enumerate(frac):
                if f:
                    data = _lerp(data, ax + 1, f, sub[ax].stop - sub[ax].start)
        weight = self._weights_translation(tile, d, region, sub)
        return [((sub[0], sub[1], sub[2]), data, None, weight)]

    def _weights_translation(
        self, tile: Tile, d: NDArray[np.float64], region: Region, sub: list[slice]
    ) -> tuple[NDArray[Any], ...] | None:
        """Separable linear weights: one 1D ramp per axis (None when not feathering)."""
        if not self.blend_mode.feathered:
            return None
        ramps = []
        for ax in range(3):
            j = np.arange(sub[ax].start, sub[ax].stop) + region[ax].start
            r = ramp(j + d[ax], tile.shape[ax], tile.voxel_size[ax], self.blend_width[ax])
            ramps.append(r.astype(self._acc))
        return tuple(ramps)

    def _interpolate(
        self, data: NDArray[Any], coords: NDArray[np.float64], shape: tuple[int, ...]
    ) -> NDArray[Any]:
        """Trilinear samples of ``data`` ``(c, ...)`` at ``coords`` (edge values repeated)."""
        from scipy import ndimage  # only the general-affine path needs it (slow to import)

        out = np.zeros((data.shape[0], *shape), dtype=self._acc)
        for ch in range(data.shape[0]):
            out[ch] = ndimage.map_coordinates(
                data[ch].astype(self._acc), coords, order=1, mode="nearest"
            )
        return out

    def _samples_affine(
        self, tile: Tile, region: Region
    ) -> list[tuple[Region, NDArray[Any], NDArray[np.bool_] | None, Any]]:
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
        if self.interpolation == "nearest":  # the labels' correspondence: no value is invented
            idx = nearest_index(t)
            mask &= np.all((idx >= 0) & (idx < n.reshape(3, 1, 1, 1)), axis=0)
            if not mask.any():
                return []
            lo = idx[:, mask].min(axis=1)
            hi = idx[:, mask].max(axis=1) + 1
            data = tile.source.read(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))  # type: ignore[arg-type]
            rel = np.clip(idx - lo.reshape(3, 1, 1, 1), 0, (hi - lo - 1).reshape(3, 1, 1, 1))
            out = data[:, rel[0], rel[1], rel[2]]
        else:
            data = tile.source.read(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))  # type: ignore[arg-type]
            out = self._interpolate(data, t - lo.reshape(3, 1, 1, 1), mask.shape)

        w: NDArray[Any] | None = None
        if self.blend_mode.feathered:
            w = np.ones(mask.shape, dtype=self._acc)
            for ax in range(3):
                w *= ramp(t[ax], int(n[ax]), tile.voxel_size[ax], self.blend_width[ax])
        full = (slice(0, mask.shape[0]), slice(0, mask.shape[1]), slice(0, mask.shape[2]))
        return [(full, out, mask, w)]


def _lerp(data: NDArray[Any], axis: int, f: float, n_out: int) -> NDArray[Any]:
    """Linear interpolation at ``i + f`` along ``axis``; clamps at the far edge."""
    a = np.take(data, np.arange(n_out), axis=axis)
    idx = np.minimum(np.arange(1, n_out + 1), data.shape[axis] - 1)
    b = np.take(data, idx, axis=axis)
    return a * (1 - f) + b * f


def default_blend_width(tiles: Sequence[Tile]) -> NDArray[np.float64]:
    """Default ramp width (z, y, x): 10 % of the median tile extent in micrometres."""
    ext = np.median([np.asarray(t.shape) * t.voxel_size for t in tiles], axis=0)
    return 0.1 * ext


class _RenderTask:
    """Picklable task: render one block; write it (parallel writers) or return it."""

    def __init__(self, plan: FusionPlan, grid: BlockGrid, writer: BlockWriter | None) -> None:
        self.plan, self.grid, self.writer = plan, grid, writer

    def __call__(self, block: tuple[int, int, int]) -> NDArray[Any] | None:
        data = self.plan.render(self.grid.region(block))
        if self.writer is None:
            return data
        self.writer.write_block(block, data)
        return None


def fuse_tiles(plan: FusionPlan, writer: BlockWriter, execution: ExecOptions | None = None) -> Any:
    """Render every pending block of a plan into a writer, then finish the writer.

    Parameters
    ----------
    plan : FusionPlan
        What to render.
    writer : tilefuse.writers.BlockWriter
        Where the blocks go (`MemoryWriter`, `OmeZarrWriter`, `BdvWriter`, ...).
        A writer that resumes (OME-Zarr) offers only the blocks an interrupted
        run of the same plan did not write.
    execution : ExecOptions, optional
        Threads, dask client, progress bar.

    Returns
    -------
    Any
        What the writer's ``finish`` returns (an array, a `MultiScaleGroup`, ...).
    """
    execution = execution or ExecOptions()
    # before anything is created: size bound, output apart from the inputs, inputs readable
    options = getattr(writer, "options", None)
    preflight(
        plan.tiles,
        getattr(writer, "path", None),
        plan.grid.shape,
        plan.dtype.itemsize,
        allow_large_output=bool(getattr(options, "allow_large_output", False)),
        workers=execution.workers,
    )
    with _write_errors(getattr(writer, "path", None)):
        return _run(plan, writer, execution)


def _run(plan: FusionPlan, writer: BlockWriter, execution: ExecOptions) -> Any:
    writer.begin(plan.spec())
    try:
        todo = writer.pending_blocks()
        task = _RenderTask(plan, writer.grid, writer if writer.parallel_writes else None)
        for block, data in imap_unordered(
            task,
            todo,
            workers=execution.workers,
            client=execution.client,
            progress=execution.progress,
            desc="fuse",
        ):
            if data is not None:
                writer.write_block(block, data)
        return writer.finish(execution)
    except BaseException:
        writer.abort()
        raise


@contextlib.contextmanager
def _write_errors(path: Any) -> Iterator[None]:
    """A full disk (or quota, or file-size limit) while writing: a one-line `WriteError`."""
    try:
        yield
    except OSError as e:
        if isinstance(e, TilefuseError) or e.errno not in _FULL:
            raise
        msg = (
            f"writing {path or 'the output'} failed: {e.strerror or e}; an OME-Zarr store is "
            "left unfinished and resumable: free space and rerun the same command"
        )
        raise WriteError(msg) from e


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
