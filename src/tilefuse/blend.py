"""Blend modes: how overlapping tiles share an output voxel, one object per mode.

A blend mode is a `Blend` object registered under its name. The fusion
engine (`tilefuse.fuse.FusionPlan`) samples every tile that touches an output
block into `Part` contributions (data on a sub-region of the block, an
optional coverage mask, an optional weight) and hands them to the mode's
`Blend.combine`, which returns the block. A mode also says whether it wants
feathering ramps as weights (`Blend.feathered`), in which order it wants the
tiles (`Blend.order`), and whether it is safe for label images
(`Blend.label_safe`: it never mixes values).

Built in: ``overwrite`` (last or first tile wins), ``max``, ``mean``,
``linear`` (feathered: each tile's weight ramps from its border inwards over
``width`` micrometres, separable over z, y, x) and ``centre`` (each voxel
from the covering tile whose centre is nearest: a Voronoi cut, label-safe).

A new mode is one small class plus `register_blend`; it is then accepted by
`Tileset.fuse(blend=...)`, `FusionOptions` and the command line's ``--blend``::

    class Minimum(Blend):
        name = "min"

        def combine(self, parts, ctx):
            out = np.full((ctx.n_channels, *ctx.shape), np.inf)
            covered = np.zeros(ctx.shape, dtype=bool)
            for p in parts:
                view = out[(slice(None), *p.sub)]
                lower = np.minimum(view, p.data)
                view[...] = lower if p.mask is None else np.where(p.mask, lower, view)
                covered[p.sub] |= True if p.mask is None else p.mask
            out[:, ~covered] = 0
            return ctx.cast(out)

    register_blend(Minimum())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import numpy as np

from tilefuse.errors import ParameterError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "Blend",
    "BlockContext",
    "Part",
    "blend_by_cells",
    "blend_names",
    "get_blend",
    "label_safe_names",
    "ramp",
    "register_blend",
    "unregister_blend",
]

Region = tuple[slice, slice, slice]

#: Smallest weight a covered voxel gets, so an edge voxel covered by one tile keeps its value.
MIN_WEIGHT = 1e-4


def ramp(t: NDArray[np.float64], n: int, voxel_size: float, width: float) -> NDArray[np.float32]:
    """Linear feathering weight along one axis.

    Parameters
    ----------
    t : ndarray
        Tile index coordinates (may be fractional) of the samples.
    n : int
        Tile size along the axis.
    voxel_size : float
        Tile voxel size along the axis (micrometres).
    width : float
        Ramp width in micrometres; 0 disables feathering on this axis.

    Returns
    -------
    ndarray of float32
        ``clip(distance_to_border / width, MIN_WEIGHT, 1)``, where the distance
        is measured from voxel centres (half a voxel at the first and last voxel).
    """
    if width <= 0 or n <= 1:
        return np.ones(t.shape, dtype=np.float32)
    d = np.minimum(t + 0.5, n - 0.5 - t) * voxel_size
    return np.clip(d / width, MIN_WEIGHT, 1.0).astype(np.float32)


class Part(NamedTuple):
    """One tile's contribution to an output block.

    Attributes
    ----------
    sub : tuple of 3 slices
        The sub-region of the block it covers (relative to the block).
    data : ndarray
        ``(c, z, y, x)`` on ``sub``: the tile's native dtype on the exact
        integer path, float otherwise.
    mask : ndarray of bool or None
        Which voxels of ``sub`` the tile covers; None when all of them.
    weight : None, tuple of 3 1D arrays, or ndarray
        Feathering weight for `Blend.feathered` modes: separable ramps (one per
        axis of ``sub``) or an array on ``sub``; None otherwise.
    tile : int
        Index of the tile in the fusion plan.
    """

    sub: Region
    data: NDArray[Any]
    mask: NDArray[np.bool_] | None
    weight: Any
    tile: int


@dataclass(frozen=True)
class BlockContext:
    """What a blend mode may know about the output block it combines.

    Attributes
    ----------
    region : tuple of 3 slices
        The block's voxel region in the output grid.
    n_channels : int
        Channels of the output.
    dtype : numpy.dtype
        Output dtype.
    acc : type
        Float type to accumulate in (float32, or float64 for wide types).
    origin, voxel_size : ndarray of 3 floats
        The output grid: voxel ``j`` is centred at ``origin + j * voxel_size``.
    tile_lo, tile_hi : ndarray, shape (n_tiles, 3)
        World boxes of the plan's tiles (indexed by `Part.tile`).
    """

    region: Region
    n_channels: int
    dtype: np.dtype[Any]
    acc: type
    origin: NDArray[np.float64]
    voxel_size: NDArray[np.float64]
    tile_lo: NDArray[np.float64]
    tile_hi: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Block shape (z, y, x)."""
        r = self.region
        return (r[0].stop - r[0].start, r[1].stop - r[1].start, r[2].stop - r[2].start)

    def zeros(self, dtype: Any = None) -> NDArray[Any]:
        """A ``(c, z, y, x)`` block of zeros (output dtype by default)."""
        return np.zeros((self.n_channels, *self.shape), dtype=dtype or self.dtype)

    def cast(self, data: NDArray[Any]) -> NDArray[Any]:
        """Values in the output dtype (rounded and clipped for integers)."""
        if data.dtype == self.dtype:
            return data
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            data = np.clip(np.rint(data), info.min, info.max)
        return data.astype(self.dtype)

    def tile_centre(self, tile: int) -> NDArray[np.float64]:
        """World centre (z, y, x) of a tile's box."""
        return (self.tile_lo[tile] + self.tile_hi[tile]) / 2

    def positions(self, axis: int, sub: slice) -> NDArray[np.float64]:
        """World positions along ``axis`` of the voxel centres of ``sub`` (block-relative)."""
        j = np.arange(sub.start, sub.stop) + self.region[axis].start
        return self.origin[axis] + j * self.voxel_size[axis]


class Blend:
    """A blend mode: subclass, set `name`, implement `combine`, then `register_blend`.

    Attributes
    ----------
    name : str
        The name users pass as ``blend=`` / ``--blend``.
    label_safe : bool
        True when the mode never mixes values (each output voxel is one
        tile's value), so label images may be fused with it.
    feathered : bool
        True when the mode wants feathering ramps (`ramp`) as `Part.weight`.
    """

    name: ClassVar[str] = ""
    label_safe: ClassVar[bool] = False
    feathered: ClassVar[bool] = False

    def order(
        self, tiles: NDArray[np.intp], priority: Literal["last", "first"]
    ) -> NDArray[np.intp]:
        """The order to sample the tiles touching a block in (default: plan order)."""
        return tiles

    def combine(self, parts: Sequence[Part], ctx: BlockContext) -> NDArray[Any]:
        """Combine the contributions into the ``(c, z, y, x)`` block, in ``ctx.dtype``.

        Voxels no part covers must be 0.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def part_weight(part: Part, acc: type, cell: Region | None = None) -> NDArray[Any]:
    """A part's weight (on ``cell``, relative to its sub-region), broadcastable; 1 without one."""
    w = part.weight
    if w is None:
        return np.ones((1, 1, 1), dtype=acc)
    if isinstance(w, tuple):  # separable ramps: outer product over the cell only
        out: NDArray[Any] = np.ones((1, 1, 1), dtype=acc)
        for ax, r in enumerate(w):
            seg = r if cell is None else r[cell[ax]]
            sh = [1, 1, 1]
            sh[ax] = seg.size
            out = out * seg.reshape(sh)
        return out
    return w if cell is None else w[cell]


def _contains(sub: Region, cell: Region) -> bool:
    return all(s.start <= c.start and c.stop <= s.stop for s, c in zip(sub, cell, strict=True))


CellCombine = Callable[[list[Part], list[Region], Region, BlockContext], Any]


def blend_by_cells(
    parts: Sequence[Part], ctx: BlockContext, combine_cell: CellCombine
) -> NDArray[Any]:
    """Blend unmasked (axis-aligned) contributions cell by cell.

    The block is cut at every contribution's border into cells covered by a
    fixed set of tiles: cells covered once are copied as they are (no float
    work); for cells covered several times ``combine_cell(cover, rel, cell,
    ctx)`` returns the cell's ``(c, ...)`` values, where ``rel[k]`` is the
    cell relative to ``cover[k].sub``.
    """
    shape = ctx.shape
    out = ctx.zeros()
    cuts = [
        sorted({0, shape[ax]} | {b for p in parts for b in (p.sub[ax].start, p.sub[ax].stop)})
        for ax in range(3)
    ]
    for cz in zip(cuts[0][:-1], cuts[0][1:], strict=True):
        for cy in zip(cuts[1][:-1], cuts[1][1:], strict=True):
            for cx in zip(cuts[2][:-1], cuts[2][1:], strict=True):
                cell = (slice(*cz), slice(*cy), slice(*cx))
                cover = [p for p in parts if _contains(p.sub, cell)]
                if not cover:
                    continue
                rel: list[Region] = [
                    tuple(  # type: ignore[misc]
                        slice(c.start - s.start, c.stop - s.start)
                        for c, s in zip(cell, p.sub, strict=True)
                    )
                    for p in cover
                ]
                target = out[(slice(None), *cell)]
                if len(cover) == 1:
                    target[...] = ctx.cast(cover[0].data[(slice(None), *rel[0])])
                    continue
                target[...] = combine_cell(cover, rel, cell, ctx)
    return out


class Overwrite(Blend):
    """Copy tiles in order: the last (or, with ``priority="first"``, the first) tile wins."""

    name = "overwrite"
    label_safe = True

    def order(
        self, tiles: NDArray[np.intp], priority: Literal["last", "first"]
    ) -> NDArray[np.intp]:
        """Reversed for ``priority="first"``, so the first tile is written last."""
        return tiles[::-1] if priority == "first" else tiles

    def combine(self, parts: Sequence[Part], ctx: BlockContext) -> NDArray[Any]:
        """Each part written over the previous ones where it has data."""
        out = ctx.zeros()
        for p in parts:
            view = out[(slice(None), *p.sub)]
            data = ctx.cast(p.data)
            if p.mask is None:
                view[...] = data
            else:
                view[:, p.mask] = data[:, p.mask]
        return out


class Max(Blend):
    """Voxel-wise maximum of the covering tiles."""

    name = "max"

    def combine(self, parts: Sequence[Part], ctx: BlockContext) -> NDArray[Any]:
        """Running maximum; uncovered voxels 0.

        Parts in the output dtype (copied voxels, nearest sampling) are
        compared in that dtype, so 64-bit integers stay exact; interpolated
        parts go through float.
        """
        native = all(p.data.dtype == ctx.dtype for p in parts)
        out = ctx.zeros(None if native else ctx.acc)
        covered = np.zeros(ctx.shape, dtype=bool)
        if not native:
            out[...] = -np.inf
        elif np.issubdtype(ctx.dtype, np.integer):
            out[...] = np.iinfo(ctx.dtype).min
        elif np.issubdtype(ctx.dtype, np.floating):
            out[...] = -np.inf
        else:
            out[...] = np.zeros((), ctx.dtype)
        for p in parts:
            view = out[(slice(None), *p.sub)]
            cur = np.maximum(view, p.data)
            view[...] = cur if p.mask is None else np.where(p.mask, cur, view)
            covered[p.sub] |= True if p.mask is None else p.mask
        out[:, ~covered] = 0
        return ctx.cast(out)


class Mean(Blend):
    """Weighted mean of the covering tiles (equal weights)."""

    name = "mean"

    def combine(self, parts: Sequence[Part], ctx: BlockContext) -> NDArray[Any]:
        """Cell by cell when no part is masked, voxel-wise sums otherwise."""
        if all(p.mask is None for p in parts):
            return blend_by_cells(parts, ctx, self._cell)
        acc = ctx.zeros(ctx.acc)
        wsum: NDArray[Any] = np.zeros(ctx.shape, dtype=ctx.acc)
        for p in parts:
            w = part_weight(p, ctx.acc)
            if p.mask is not None:
                w = w * p.mask
            acc[(slice(None), *p.sub)] += p.data * w
            wsum[p.sub] += w
        np.divide(acc, wsum, out=acc, where=wsum > 0)
        return ctx.cast(acc)

    @staticmethod
    def _cell(
        cover: list[Part], rel: list[Region], cell: Region, ctx: BlockContext
    ) -> NDArray[Any]:
        shape = (ctx.n_channels, *(c.stop - c.start for c in cell))
        acc = np.zeros(shape, dtype=ctx.acc)
        wsum: Any = np.zeros((1, 1, 1), dtype=ctx.acc)
        for p, r in zip(cover, rel, strict=True):
            wr = part_weight(p, ctx.acc, r)
            acc += p.data[(slice(None), *r)] * wr
            wsum = wsum + wr
        return ctx.cast(acc / wsum)


class Linear(Mean):
    """Feathered mean: each tile's weight ramps up from its border over the blend width."""

    name = "linear"
    feathered = True


class Centre(Blend):
    """Each voxel from the covering tile whose centre is nearest (ties: the first tile)."""

    name = "centre"
    label_safe = True

    def combine(self, parts: Sequence[Part], ctx: BlockContext) -> NDArray[Any]:
        """A Voronoi cut between tile centres; no value is mixed."""
        if all(p.mask is None for p in parts):
            return blend_by_cells(parts, ctx, self._closest)
        out = ctx.zeros()
        best = np.full(ctx.shape, np.inf)
        for p in parts:
            centre = ctx.tile_centre(p.tile)
            d = np.zeros((1, 1, 1))
            for ax in range(3):
                sh = [1, 1, 1]
                pos = ctx.positions(ax, p.sub[ax])
                sh[ax] = pos.size
                d = d + ((pos - centre[ax]) ** 2).reshape(sh)
            closer = d < best[p.sub]
            if p.mask is not None:
                closer &= p.mask
            best[p.sub] = np.where(closer, d, best[p.sub])
            view = out[(slice(None), *p.sub)]
            view[...] = np.where(closer, ctx.cast(p.data), view)
        return out

    @staticmethod
    def _closest(
        cover: list[Part], rel: list[Region], cell: Region, ctx: BlockContext
    ) -> NDArray[Any]:
        pos = [ctx.positions(ax, cell[ax]) for ax in range(3)]
        dist = np.stack(
            [
                (pos[0] - c[0])[:, None, None] ** 2
                + (pos[1] - c[1])[None, :, None] ** 2
                + (pos[2] - c[2])[None, None, :] ** 2
                for c in (ctx.tile_centre(p.tile) for p in cover)
            ]
        )
        pick = np.argmin(dist, axis=0)  # ties: the first tile
        stack = np.stack([p.data[(slice(None), *r)] for p, r in zip(cover, rel, strict=True)])
        return ctx.cast(np.take_along_axis(stack, pick[None, None], axis=0)[0])


_REGISTRY: dict[str, Blend] = {}


def register_blend(blend: Blend, *, replace: bool = False) -> Blend:
    """Make a blend mode available by its name (to `fuse`, `FusionOptions` and ``--blend``).

    Raises
    ------
    ValueError
        If the name is empty, or taken and ``replace`` is false.
    """
    if not isinstance(blend, Blend) or not blend.name:
        msg = f"a blend mode must be a Blend instance with a name, got {blend!r}"
        raise ParameterError(msg)
    if blend.name in _REGISTRY and not replace:
        msg = f"blend mode {blend.name!r} is already registered (pass replace=True)"
        raise ParameterError(msg)
    _REGISTRY[blend.name] = blend
    return blend


def unregister_blend(name: str) -> None:
    """Remove a registered blend mode (built-in modes included; use with care)."""
    _REGISTRY.pop(name, None)


def get_blend(blend: str | Blend) -> Blend:
    """The blend mode object for a name (or the object itself).

    Raises
    ------
    ValueError
        If no mode of that name is registered.
    """
    if isinstance(blend, Blend):
        return blend
    try:
        return _REGISTRY[blend]
    except (KeyError, TypeError):
        msg = f"blend must be one of {blend_names()}, got {blend!r}"
        raise ParameterError(msg) from None


def blend_names() -> tuple[str, ...]:
    """Names of the registered blend modes."""
    return tuple(_REGISTRY)


def label_safe_names() -> tuple[str, ...]:
    """Names of the registered modes that never mix values (usable for labels)."""
    return tuple(n for n, b in _REGISTRY.items() if b.label_safe)


for _mode in (Overwrite(), Max(), Mean(), Linear(), Centre()):
    register_blend(_mode)
