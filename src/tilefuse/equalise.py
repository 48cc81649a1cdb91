"""Tile-to-tile intensity equalisation from overlaps, and a seam metric.

Each overlapping pair gives a robust linear relation between the two tiles'
intensities on the same sample (quantile matching of the voxels both tiles
see: ``x_i ~ s * x_j + t``). A per-tile correction ``a_k * x + c_k`` is then
solved globally by regularised least squares so that ``a_i x_i + c_i = a_j
x_j + c_j`` on every kept link: ``a_i s = a_j`` and ``a_i t + c_i = c_j``,
with one reference tile fixed at ``a = 1, c = 0`` and a weak pull of every
other tile towards it. Links that disagree with the solution (as in
registration) are dropped one at a time, worst first, and the solve repeated.
Links whose overlap carries no structure (blank tiles: low correlation of
matched voxels) never enter the solve; a tile left with no link keeps
``a = 1, c = 0``.

Modules below `tilefuse.tileset` take tiles and overlaps and return results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import CorrectionError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = [
    "EdgeSeamReport",
    "GainSolution",
    "PairStat",
    "SeamReport",
    "fused_seam_metric",
    "pair_statistics",
    "seam_metric",
    "solve_gains",
]

logger = logging.getLogger(__name__)

_QUANTILES = np.linspace(5, 95, 19)


@dataclass(frozen=True)
class PairStat:
    """What one overlap says about two tiles' intensities.

    Attributes
    ----------
    i, j : int
        Tile indices.
    slope, intercept : float
        ``x_i ~ slope * x_j + intercept`` (quantile matching).
    ncc : float
        Correlation of matched voxels (nan for rotated tiles).
    n : int
        Voxel pairs used.
    usable : bool
        Whether the overlap has structure enough to enter the solve.
    """

    i: int
    j: int
    slope: float
    intercept: float
    ncc: float
    n: int
    usable: bool
    level: float = 1.0


def _matched(
    ti: Tile, tj: Tile, si: Sequence[slice], sj: Sequence[slice], channel: int, max_planes: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Voxel values of two tiles over their overlap (nearest correspondence, sampled in z)."""
    n = [min(a.stop - a.start, b.stop - b.start) for a, b in zip(si, sj, strict=True)]
    if min(n) < 1:
        return np.empty(0), np.empty(0)
    zs = np.unique(np.linspace(0, n[0] - 1, min(n[0], max_planes)).round().astype(int))
    a, b = [], []
    for z in zs:
        ri = (
            slice(si[0].start + z, si[0].start + z + 1),
            slice(si[1].start, si[1].start + n[1]),
            slice(si[2].start, si[2].start + n[2]),
        )
        rj = (
            slice(sj[0].start + z, sj[0].start + z + 1),
            slice(sj[1].start, sj[1].start + n[1]),
            slice(sj[2].start, sj[2].start + n[2]),
        )
        a.append(np.asarray(ti.source.read(ri)[channel], dtype=np.float64).ravel())
        b.append(np.asarray(tj.source.read(rj)[channel], dtype=np.float64).ravel())
    return np.concatenate(a), np.concatenate(b)


def pair_statistics(
    tiles: Sequence[Tile],
    overlaps: Sequence[Any],
    channel: int = 0,
    *,
    offsets: bool = False,
    min_ncc: float = 0.3,
    min_voxels: int = 64,
    max_planes: int = 8,
) -> list[PairStat]:
    """Robust intensity relation of every overlapping pair.

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles (already shading-corrected when shading is to be removed).
    overlaps : sequence of Overlap
        From `Tileset.overlaps`.
    channel : int
        Channel index.
    offsets : bool
        Fit ``slope`` and ``intercept``; otherwise ``slope`` only (through 0).
    min_ncc : float
        Overlaps whose matched voxels correlate less (blank or misplaced
        tiles) are not usable.
    min_voxels : int
        Smaller overlaps are not usable.
    max_planes : int
        z planes read per overlap (evenly spaced): the read bound.

    Returns
    -------
    list of PairStat
    """
    out = []
    for o in overlaps:
        ti, tj = tiles[o.i], tiles[o.j]
        a, b = _matched(ti, tj, o.slices_i, o.slices_j, channel, max_planes)
        if len(a) < min_voxels:
            out.append(PairStat(o.i, o.j, 1.0, 0.0, float("nan"), len(a), usable=False))
            continue
        qa, qb = np.percentile(a, _QUANTILES), np.percentile(b, _QUANTILES)
        if offsets:
            slope, intercept = (float(v) for v in np.polyfit(qb, qa, 1))
        else:
            den = float(qb @ qb)
            slope, intercept = (float(qa @ qb) / den if den > 0 else 1.0), 0.0
        ncc = float("nan")
        if ti.is_translation and tj.is_translation and a.std() > 0 and b.std() > 0:
            ncc = float(np.corrcoef(a, b)[0, 1])
        spread = min(qa[-1] - qa[0], qb[-1] - qb[0])
        usable = bool(
            spread > 0 and slope > 0 and (np.isnan(ncc) or ncc >= min_ncc) and np.isfinite(slope)
        )
        level = float(np.median(np.abs(np.concatenate([qa, qb]))))
        out.append(PairStat(o.i, o.j, slope, intercept, ncc, len(a), usable, level))
    return out


@dataclass
class GainSolution:
    """Per-tile intensity corrections ``a * x + c`` of one channel.

    Attributes
    ----------
    gains, offsets : ndarray (n,)
        ``a`` and ``c`` per tile (the reference has 1 and 0).
    reference : int
        The reference tile.
    kept, dropped : list of (int, int)
        Links used in the final solve, and links dropped as disagreeing.
    unusable : list of (int, int)
        Overlaps without structure (never used).
    unlinked : list of int
        Tiles not connected to the reference by kept links (their correction
        is only the pull towards 1 / 0).
    residuals : dict
        Relative gain disagreement of each kept link after the solve.
    """

    gains: NDArray[np.float64]
    offsets: NDArray[np.float64]
    reference: int
    kept: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[tuple[int, int]] = field(default_factory=list)
    unusable: list[tuple[int, int]] = field(default_factory=list)
    unlinked: list[int] = field(default_factory=list)
    residuals: dict[tuple[int, int], float] = field(default_factory=dict)


def _components(n: int, links: Sequence[tuple[int, int]]) -> NDArray[np.intp]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not links:
        return np.arange(n)
    e = np.array(links)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _solve(
    n: int,
    stats: Sequence[PairStat],
    ref: int,
    level: float,
    offsets: bool,
    reg: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Least squares for (a, c/level) given kept links."""
    m = 2 * n if offsets else n
    rows: list[NDArray[np.float64]] = []
    rhs: list[float] = []

    def row() -> NDArray[np.float64]:
        return np.zeros(m)

    for s in stats:
        r = row()
        r[s.i], r[s.j] = s.slope, -1.0
        rows.append(r)
        rhs.append(0.0)
        if offsets:
            r = row()
            r[s.i], r[n + s.i], r[n + s.j] = s.intercept / level, 1.0, -1.0
            rows.append(r)
            rhs.append(0.0)
    big = 1e3
    r = row()
    r[ref] = big
    rows.append(r)
    rhs.append(big)
    if offsets:
        r = row()
        r[n + ref] = big
        rows.append(r)
        rhs.append(0.0)
    for k in range(n):
        r = row()
        r[k] = reg
        rows.append(r)
        rhs.append(reg)
        if offsets:
            r = row()
            r[n + k] = reg
            rows.append(r)
            rhs.append(0.0)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    a = sol[:n]
    c = sol[n:] * level if offsets else np.zeros(n)
    return a, c


def solve_gains(
    n_tiles: int,
    stats: Sequence[PairStat],
    *,
    offsets: bool = False,
    reference: int | None = None,
    regularisation: float = 1e-3,
    max_residual: float = 0.05,
) -> GainSolution:
    """Solve per-tile gains (and offsets) from pair statistics.

    Parameters
    ----------
    n_tiles : int
        Number of tiles.
    stats : sequence of PairStat
        From `pair_statistics`.
    offsets : bool
        Solve an additive offset per tile too.
    reference : int, optional
        Tile fixed at gain 1, offset 0 (default: the tile with most usable links).
    regularisation : float
        Weight pulling each gain towards 1 (and offset towards 0) relative to a link.
    max_residual : float
        Links whose relative disagreement with the solution exceeds this are
        dropped (worst first, one at a time) and the solve repeated.

    Returns
    -------
    GainSolution
    """
    if reference is not None and not 0 <= reference < n_tiles:
        msg = f"reference tile {reference} is not in [0, {n_tiles})"
        raise CorrectionError(msg)
    usable = [s for s in stats if s.usable]
    unusable = [(s.i, s.j) for s in stats if not s.usable]
    if reference is None:
        deg = np.zeros(n_tiles, dtype=int)
        for s in usable:
            deg[s.i] += 1
            deg[s.j] += 1
        reference = int(np.argmax(deg))
    # a typical intensity: offsets are solved in units of it (conditioning)
    level = float(np.median([s.level for s in usable] or [1.0])) or 1.0
    kept = list(usable)
    dropped: list[tuple[int, int]] = []
    while True:
        a, c = _solve(n_tiles, kept, reference, level, offsets, regularisation)
        res = {(s.i, s.j): abs(a[s.i] * s.slope - a[s.j]) / max(abs(a[s.j]), 1e-12) for s in kept}
        if not res:
            break
        worst = max(res, key=lambda k: res[k])
        if res[worst] <= max_residual:
            break
        logger.info("dropping intensity link %s: gain disagreement %.3g", worst, res[worst])
        dropped.append(worst)
        kept = [s for s in kept if (s.i, s.j) != worst]
    comp = _components(n_tiles, [(s.i, s.j) for s in kept])
    unlinked = [k for k in range(n_tiles) if comp[k] != comp[reference]]
    if unlinked:
        logger.info(
            "%d tile(s) have no usable intensity link to the reference tile %d (kept at gain "
            "1): %s",
            len(unlinked),
            reference,
            unlinked,
        )
    if np.any(a <= 0):
        msg = f"intensity equalisation gave non-positive gains for tiles {np.flatnonzero(a <= 0)}"
        raise CorrectionError(msg)
    return GainSolution(
        a,
        c,
        reference,
        [(s.i, s.j) for s in kept],
        dropped,
        unusable,
        unlinked,
        res,
    )


@dataclass(frozen=True)
class SeamReport:
    """The seam metric of a tileset.

    Attributes
    ----------
    score : float
        Mean absolute intensity step across tile boundaries divided by the
        mean absolute step between voxels at the same distance within a tile:
        1 is seamless, 1.2 means steps 20 % larger than the image's own
        variation.
    pairs : dict
        ``{(i, j): score}`` per overlapping neighbour pair.
    """

    score: float
    pairs: dict[tuple[int, int], float]


def seam_metric(
    tiles: Sequence[Tile],
    overlaps: Sequence[Any],
    channel: int = 0,
    *,
    distance: int = 1,
    max_planes: int = 8,
) -> SeamReport:
    """How visible tile boundaries are, as a number (1 = seamless).

    For every overlapping pair of axis-aligned tiles side by side along an
    axis, the boundary is placed at every position in the middle half of the
    overlap: the "across" step is ``|x_i(p) - x_j(p + d)|`` (the first tile's
    voxel, then the second tile's voxel ``d`` further on, as a fusion that
    switches tiles there would show), the "within" step is the mean of
    ``|x_i(p) - x_i(p + d)|`` and ``|x_j(p) - x_j(p + d)|``. The score is the
    sum of across steps over the sum of within steps, over all pairs.

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles (corrected or not).
    overlaps : sequence of Overlap
        From `Tileset.overlaps`.
    channel : int
        Channel index.
    distance : int
        ``d`` in voxels.
    max_planes : int
        z planes read per overlap.

    Returns
    -------
    SeamReport

    Raises
    ------
    CorrectionError
        If no pair of tiles has an overlap wide enough to measure.
    """
    steps = _Steps()
    for o in overlaps:
        ti, tj = tiles[o.i], tiles[o.j]
        if not (ti.is_translation and tj.is_translation):
            continue
        ci = (ti.box[0] + ti.box[1]) / 2
        cj = (tj.box[0] + tj.box[1]) / 2
        ext = ti.box[1] - ti.box[0]
        axis = int(np.argmax(np.abs(cj - ci) / ext))
        n = [
            min(x.stop - x.start, y.stop - y.start)
            for x, y in zip(o.slices_i, o.slices_j, strict=True)
        ]
        nz = n[0] if axis == 0 else min(n[0], max_planes)  # z seams need every plane
        a, b = _matched(ti, tj, o.slices_i, o.slices_j, channel, nz)
        if not len(a):
            continue
        zs = np.unique(np.linspace(0, n[0] - 1, nz).round().astype(int))
        shape = (len(zs), n[1], n[2])
        a, b = a.reshape(shape), b.reshape(shape)
        if cj[axis] < ci[axis]:
            a, b = b, a  # a: the tile on the low side
        a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
        length = a.shape[0]
        lo, hi = length // 4, length - length // 4 - distance
        if hi <= lo:
            continue
        p = slice(lo, hi)
        q = slice(lo + distance, hi + distance)
        steps.add((o.i, o.j), (a[p], b[q]), [(a[p], a[q]), (b[p], b[q])])
    score, pairs = steps.result(
        "no overlap is wide enough to measure seams (need axis-aligned tiles)"
    )
    return SeamReport(score, pairs)


class _Steps:
    """Sums of "across" and "within" steps, and the ratio of each keyed place."""

    def __init__(self) -> None:
        self.across, self.within = 0.0, 0.0
        self.ratios: dict[Any, float] = {}

    def add(
        self,
        key: Any,
        across: tuple[NDArray[Any], NDArray[Any]],
        within: Sequence[tuple[NDArray[Any], NDArray[Any]]],
    ) -> None:
        """One place: the step across it, and the mean of the steps beside it."""
        a = float(np.abs(across[0] - across[1]).sum())
        w = float(0.5 * sum(np.abs(x - y).sum() for x, y in within))
        if w > 0:
            self.ratios[key] = a / w
            self.across += a
            self.within += w

    def result(self, empty: str) -> tuple[float, dict[Any, float]]:
        """The overall score and the per-place ratios; `CorrectionError` ``empty`` if none."""
        if not self.ratios:
            raise CorrectionError(empty)
        return self.across / self.within, self.ratios


@dataclass(frozen=True)
class EdgeSeamReport:
    """The seam metric of a fused image, measured at the tile edges.

    Attributes
    ----------
    score : float
        Mean absolute step across the tile edges divided by the mean absolute
        step at the same distance a few voxels either side: 1 is seamless.
    edges : dict
        ``{(tile, edge): score}`` with ``edge`` one of ``"z-", "z+", "y-",
        "y+", "x-", "x+"`` (the tile's low or high face along that axis), for
        every edge with other tiles' data beyond it.
    """

    score: float
    edges: dict[tuple[int, str], float]


def fused_seam_metric(
    image: Any,
    boxes: ArrayLike,
    channel: int = 0,
    *,
    distance: int = 1,
    control: int = 3,
    max_planes: int = 8,
) -> EdgeSeamReport:
    """How visible tile boundaries are in an already fused image (1 = seamless).

    At every face of every tile box that has another tile's data beyond it,
    the "across" step is ``|f(e - 1) - f(e - 1 + d)|`` (the voxels either side
    of the edge at distance ``d``) and the "within" step the same difference
    ``control`` voxels before and after the edge. The score is the sum of
    across steps over the sum of within steps. A blend that ramps between
    tiles spreads a step over its ramp: at ``d = 1`` a linearly blended
    output then shows only what is left of the step (pass ``distance`` near
    the blend width to see the ramp, or measure an ``overwrite`` fusion).

    Parameters
    ----------
    image : array_like
        The fused volume, ``(c, z, y, x)`` or ``(z, y, x)`` (a zarr array is
        read plane by plane).
    boxes : array_like, shape (n, 2, 3)
        Every tile's box ``(lo, hi)`` in output voxel boundaries: voxel ``j``
        spans ``[j, j + 1)``.
    channel : int
        Channel index (for 4D images).
    distance : int
        ``d`` in voxels.
    control : int
        Distance of the reference steps from the edge (at least ``d``).
    max_planes : int
        z planes read per edge (faces along z use every plane they need).

    Returns
    -------
    EdgeSeamReport

    Raises
    ------
    CorrectionError
        If no tile edge has data on both sides.
    """
    b = np.rint(np.asarray(boxes, dtype=np.float64)).astype(np.int64)
    shape = tuple(int(v) for v in image.shape[-3:])
    nd4 = len(image.shape) == 4
    d, m = int(distance), max(int(control), int(distance))
    lo_c = np.clip(b[:, 0], 0, shape)
    hi_c = np.clip(b[:, 1], 0, shape)
    steps = _Steps()
    for k in range(len(b)):
        for ax in range(3):
            others = [a for a in range(3) if a != ax]
            for side, e in (("-", b[k, 0, ax]), ("+", b[k, 1, ax])):
                if e - 1 - m < 0 or e - 1 + m + d >= shape[ax]:
                    continue
                far = e - 1 + m + d if side == "+" else e - 1 - m  # outside tile k
                span = [(int(lo_c[k, a]), int(hi_c[k, a])) for a in others]
                if any(h <= lo for lo, h in span):
                    continue
                cover = np.zeros([h - lo for lo, h in span], dtype=bool)
                for j in range(len(b)):
                    if j == k or not b[j, 0, ax] <= far < b[j, 1, ax]:
                        continue
                    sl = tuple(
                        slice(max(int(b[j, 0, a]) - lo, 0), max(int(b[j, 1, a]) - lo, 0))
                        for a, (lo, _) in zip(others, span, strict=True)
                    )
                    cover[sl] = True
                if not cover.any():
                    continue
                positions = [e - 1 - m, e - 1, e - 1 + m]
                lines = _edge_lines(image, nd4, channel, ax, positions, d, span, max_planes)
                sel = cover if ax == 0 else cover[_plane_pick(span[0], max_planes)]
                (p0, p1), (q0, q1), (r0, r1) = ((a[sel], bb[sel]) for a, bb in lines)
                steps.add((k, "zyx"[ax] + side), (q0, q1), [(p0, p1), (r0, r1)])
    score, edges = steps.result("no tile edge has fused data on both sides to measure seams")
    return EdgeSeamReport(score, edges)


def _plane_pick(span: tuple[int, int], max_planes: int) -> NDArray[np.intp]:
    """Indices (relative to ``span``) of at most ``max_planes`` evenly spread z planes."""
    n = span[1] - span[0]
    return np.unique(np.linspace(0, n - 1, min(n, max_planes)).round().astype(np.intp))


def _edge_lines(
    image: Any,
    nd4: bool,
    channel: int,
    ax: int,
    positions: Sequence[int],
    d: int,
    span: Sequence[tuple[int, int]],
    max_planes: int,
) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """For each position ``p`` along ``ax``: the image at ``p`` and at ``p + d`` over the span."""
    out = []
    for p in positions:
        pair = []
        for q in (p, p + d):
            idx: list[Any] = [None, None, None]
            idx[ax] = q
            others = [a for a in range(3) if a != ax]
            for a, (lo, hi) in zip(others, span, strict=True):
                idx[a] = slice(lo, hi)
            if ax != 0:  # sample z planes (the first of the other axes is z)
                zs = _plane_pick(span[0], max_planes) + span[0][0]
                planes = [
                    np.asarray(image[(channel, z, *idx[1:]) if nd4 else (z, *idx[1:])]) for z in zs
                ]
                pair.append(np.stack(planes).astype(np.float64))
            else:
                key = (channel, *idx) if nd4 else tuple(idx)
                pair.append(np.asarray(image[key], dtype=np.float64))
        out.append((pair[0], pair[1]))
    return out


@dataclass(frozen=True)
class OverlapSample:
    """Block-averaged voxel values of one overlap as both tiles see it.

    ``values_i[k]`` (tile ``i``, field-of-view position ``(yi[k], xi[k])`` in
    voxel centres) and ``values_j[k]`` (tile ``j`` at ``(yj[k], xj[k])``) are
    the same piece of sample.
    """

    i: int
    j: int
    values_i: NDArray[np.float64]
    yi: NDArray[np.float64]
    xi: NDArray[np.float64]
    values_j: NDArray[np.float64]
    yj: NDArray[np.float64]
    xj: NDArray[np.float64]


def overlap_samples(
    tiles: Sequence[Tile],
    overlaps: Sequence[Any],
    links: Sequence[tuple[int, int]],
    channel: int = 0,
    *,
    block: int = 4,
    max_planes: int = 8,
) -> list[OverlapSample]:
    """Matched, block-averaged (y, x) and z-averaged overlap values of the given links.

    Only axis-aligned tiles give samples. The values are linear in the raw
    data (means), so a linear shading model holds for them as for voxels.
    """
    want = set(links)
    out = []
    for o in overlaps:
        if (o.i, o.j) not in want:
            continue
        ti, tj = tiles[o.i], tiles[o.j]
        if not (ti.is_translation and tj.is_translation):
            continue
        n = [
            min(a.stop - a.start, b.stop - b.start)
            for a, b in zip(o.slices_i, o.slices_j, strict=True)
        ]
        a, b = _matched(ti, tj, o.slices_i, o.slices_j, channel, max_planes)
        if not len(a):
            continue
        nz = len(a) // (n[1] * n[2])
        hy, hx = n[1] // block, n[2] // block
        if hy < 1 or hx < 1:
            continue

        cy = np.arange(hy) * block + (block - 1) / 2
        cx = np.arange(hx) * block + (block - 1) / 2
        gy, gx = np.meshgrid(cy, cx, indexing="ij")
        out.append(
            OverlapSample(
                o.i,
                o.j,
                _block_mean(a, (nz, n[1], n[2]), block),
                (gy + o.slices_i[1].start).ravel(),
                (gx + o.slices_i[2].start).ravel(),
                _block_mean(b, (nz, n[1], n[2]), block),
                (gy + o.slices_j[1].start).ravel(),
                (gx + o.slices_j[2].start).ravel(),
            )
        )
    return out


def _block_mean(v: NDArray[Any], shape: tuple[int, int, int], block: int) -> NDArray[np.float64]:
    """Mean over z and over ``block x block`` (y, x) blocks (the remainder dropped), raveled."""
    nz, ny, nx = shape
    hy, hx = ny // block, nx // block
    v = v.reshape(nz, ny, nx)[:, : hy * block, : hx * block]
    return v.reshape(nz, hy, block, hx, block).mean(axis=(0, 2, 4)).ravel()
