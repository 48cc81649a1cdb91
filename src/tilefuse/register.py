"""Registration: pairwise phase correlation on overlaps, then a global least-squares placement.

Pairwise: for each overlapping pair (from the current positions) the two
tiles' views of the overlap box are phase-correlated; the strongest peaks,
each with its wrap-around alternatives, are checked by normalised
cross-correlation (NCC) on the voxels that really overlap for that shift;
the best integer shift is made a local NCC maximum and refined to sub-voxel
precision around that shift (a Gauss-Newton least-squares fit of one view to
the other, resampled with cubic splines; never clipped) and kept as a link
(shift, NCC, overlap size). Regions without signal produce no link.

Global: translations minimise the weighted squared link residuals, one tile
fixed per connected group (sparse least squares). While the worst residual
exceeds both an absolute and a relative threshold the worst link is dropped,
unless dropping it would disconnect a tile; BigStitcher's presets are the
defaults. Groups without links keep their positions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from tilefuse.errors import IncompatibleTilesError
from tilefuse.layout import Layout
from tilefuse.parallel import map_in_order

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = ["PRESETS", "Link", "RegistrationReport", "pairwise_shift", "register"]

logger = logging.getLogger(__name__)

#: (relative, absolute in voxels) error thresholds, as BigStitcher's global optimisation presets
PRESETS = {"strict": (2.5, 3.5), "relaxed": (3.5, 7.0)}


@dataclass
class Link:
    """One pairwise result: tile ``j`` should move by ``shift_um`` relative to tile ``i``."""

    i: int
    j: int
    shift_um: NDArray[np.float64]
    ncc: float
    overlap_voxels: int
    kept: bool = True
    residual_um: float = 0.0


@dataclass
class RegistrationReport:
    """What `register` did: every link, the dropped ones, the residual of every tile."""

    links: list[Link]
    offsets_before: NDArray[np.float64]
    offsets_after: NDArray[np.float64]
    residual_um: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def dropped(self) -> list[Link]:
        """Links rejected (low NCC, no signal) or removed by the global optimisation."""
        return [k for k in self.links if not k.kept]

    def table(self) -> list[dict[str, Any]]:
        """The pairwise table as plain rows."""
        return [
            {
                "i": k.i,
                "j": k.j,
                "shift_um": [float(v) for v in k.shift_um],
                "ncc": k.ncc,
                "overlap_voxels": k.overlap_voxels,
                "kept": k.kept,
                "residual_um": k.residual_um,
            }
            for k in self.links
        ]

    def to_png(self, path: str | os.PathLike[str], tileset: Sequence[Tile] | None = None) -> Any:
        """Draw tiles (y-x boxes at the new positions) and links coloured by NCC (red: dropped)."""
        from tilefuse._optional import require

        matplotlib = require("matplotlib", "plot", "the registration report picture")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        fig, ax = plt.subplots(figsize=(6, 6))
        centres = {}
        for idx, off in enumerate(self.offsets_after):
            if tileset is not None:
                size = np.asarray(tileset[idx].shape) * tileset[idx].voxel_size
                lo = off - tileset[idx].voxel_size / 2  # the box: half a voxel before centre 0
                ax.add_patch(Rectangle((lo[2], lo[1]), size[2], size[1], fill=False, lw=0.8))
                centres[idx] = lo + size / 2
            else:
                centres[idx] = off
        cmap = plt.get_cmap("viridis")
        for k in self.links:
            a, b = centres[k.i], centres[k.j]
            color = cmap(max(0.0, min(1.0, k.ncc))) if k.kept else "red"
            ax.plot(
                [a[2], b[2]],
                [a[1], b[1]],
                color=color,
                lw=2 if k.kept else 1,
                ls="-" if k.kept else "--",
            )
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_title("links by NCC (red dashed: dropped)")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path


def _ncc(a: NDArray[Any], b: NDArray[Any], s: tuple[int, ...]) -> tuple[float, int]:
    """NCC of ``a(x + s)`` and ``b(x)`` over the voxels both have, and their count."""
    sa, sb = [], []
    for n, d in zip(a.shape, s, strict=True):
        sa.append(slice(max(d, 0), n + min(d, 0)))
        sb.append(slice(max(-d, 0), n - max(d, 0)))
    x, y = a[tuple(sa)].ravel(), b[tuple(sb)].ravel()
    if x.size < 8:
        return -1.0, int(x.size)
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return (float((x * y).sum() / den) if den > 0 else -1.0), int(x.size)


def _climb(a: NDArray[Any], b: NDArray[Any], s: tuple[int, ...], ncc: float) -> tuple[Any, ...]:
    """Walk from integer shift ``s`` to the neighbour of highest NCC until none is higher."""
    best: tuple[float, tuple[int, ...], int] = (ncc, s, _ncc(a, b, s)[1])
    for _ in range(8):
        cur = best
        for ax in range(a.ndim):
            for step in (-1, 1):
                t = list(cur[1])
                t[ax] += step
                c, n = _ncc(a, b, tuple(t))
                if c > best[0]:
                    best = (c, tuple(t), n)
        if best[1] == cur[1]:
            break
    return best


def _refine(
    a: NDArray[np.float64], b: NDArray[np.float64], s: tuple[int, ...]
) -> NDArray[np.float64] | None:
    """Sub-voxel shift ``d`` (|d| < 1 per axis) with ``b(x) ~ g * a(x + s + d) + c``.

    Gauss-Newton on the overlap of the chosen integer shift ``s``: ``a`` is
    resampled (cubic spline) at ``x + s + d`` and ``d`` updated from the
    least-squares fit of ``b`` to the resampled ``a``, its gradient, a gain
    and an offset, until the update is below 1e-3 voxel. The fixed point is
    the least-squares optimum of the shift, so the result is not tied to a
    peak model and is never clipped. Returns None when the fit does not
    converge inside one voxel (the caller keeps the integer shift's parabola).
    """
    from scipy import ndimage  # slow to import; only registration needs it

    axes = [ax for ax, n in enumerate(a.shape) if n >= 6]
    if not axes:
        return None
    coef = ndimage.spline_filter(a, order=3, mode="mirror")
    d = np.zeros(a.ndim)
    # voxels x of b whose partners x + s + d (|d| <= 1) lie at least 2 voxels inside a
    inner = []
    for ax, (n, k) in enumerate(zip(a.shape, s, strict=True)):
        m = 2 if ax in axes else 0
        lo, hi = max(0, m - k), min(n, n - m - k)
        if hi - lo < 2 and ax in axes:
            return None
        inner.append(slice(lo, hi))
    region = tuple(inner)
    y = b[region].ravel()
    if y.size < 64:
        return None
    for _ in range(10):
        warped = ndimage.shift(coef, -(np.asarray(s) + d), order=3, prefilter=False, mode="mirror")
        grads = [np.gradient(warped, axis=ax)[region].ravel() for ax in axes]
        w = warped[region].ravel()
        x = np.stack([w, np.ones_like(w), *grads], axis=1)
        coeffs, *_ = np.linalg.lstsq(x, y, rcond=None)
        if coeffs[0] <= 0:
            return None
        step = coeffs[2:] / coeffs[0]
        d[axes] += step
        if np.any(np.abs(d) >= 1):
            return None
        if np.max(np.abs(step)) < 1e-3:
            return d
    return d


def _parabola(values: NDArray[np.float64]) -> float:
    """Vertex of the parabola through ``values`` at -1, 0, 1 (0 when not a maximum)."""
    ym, y0, yp = values
    den = ym - 2 * y0 + yp
    return float(0.5 * (ym - yp) / den) if den < 0 else 0.0


def _ncc_parabola(a: NDArray[Any], b: NDArray[Any], s: tuple[int, ...]) -> NDArray[np.float64]:
    """Per-axis parabola through the NCC at ``s`` and its two neighbours (``s`` a local maximum)."""
    out = np.zeros(a.ndim)
    for ax, n in enumerate(a.shape):
        if n < 3:
            continue
        vals = []
        for step in (-1, 0, 1):
            t = list(s)
            t[ax] += step
            vals.append(_ncc(a, b, tuple(t))[0])
        out[ax] = _parabola(np.array(vals))
    return out


def pairwise_shift(
    a: NDArray[Any], b: NDArray[Any], *, n_peaks: int = 5, min_overlap: float = 0.2
) -> tuple[NDArray[np.float64], float, int]:
    """The shift ``d`` (voxels) with ``b(x) ~ a(x + d)``, its NCC and overlap size.

    Parameters
    ----------
    a, b : ndarray
        The same-shaped views of one world box from two tiles.
    n_peaks : int
        Phase-correlation peaks tried (each with its wrap-around alternatives).
    min_overlap : float
        Candidate shifts that leave less than this fraction of the box
        overlapping are ignored.

    Returns
    -------
    (shift, ncc, overlap_voxels)
        ``ncc = -1`` when no candidate qualifies (e.g. no signal).
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return np.zeros(a.ndim), -1.0, 0
    fa = np.fft.fftn(a - a.mean())
    fb = np.fft.fftn(b - b.mean())
    cross = fa * np.conj(fb)
    cross /= np.abs(cross) + 1e-12
    r = np.real(np.fft.ifftn(cross))
    flat = np.argsort(r.ravel())[::-1][: max(1, n_peaks)]
    best = (-2.0, (0,) * a.ndim, 0)
    for f in flat:
        peak = np.unravel_index(int(f), r.shape)
        options = [(p,) if p == 0 else (p, p - n) for p, n in zip(peak, r.shape, strict=True)]
        for cand in np.array(np.meshgrid(*options, indexing="ij")).reshape(a.ndim, -1).T:
            s = tuple(int(v) for v in cand)
            ncc, n = _ncc(a, b, s)
            if n >= min_overlap * a.size and ncc > best[0]:
                best = (ncc, s, n)
    ncc, s, n = best
    if ncc <= -1:
        return np.zeros(a.ndim), -1.0, 0
    # the chosen integer shift is the NCC maximum among the peaks; make it a local maximum,
    # then refine around it (never around another phase-correlation peak)
    ncc, s, n = _climb(a, b, s, ncc)
    d = _refine(a, b, s)
    if d is None:
        d = _ncc_parabola(a, b, s)
    return np.asarray(s, dtype=float) + d, ncc, n


def register(
    tiles: Sequence[Tile],
    *,
    voxel_size: ArrayLike | None = None,
    channel: int = 0,
    downsample: tuple[int, int, int] | None = None,
    min_ncc: float = 0.5,
    n_peaks: int = 5,
    preset: Literal["strict", "relaxed"] = "strict",
    thresholds: tuple[float, float] | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
) -> tuple[list[Tile], RegistrationReport]:
    """Register the tiles: pairwise phase correlation plus global optimisation.

    Parameters
    ----------
    tiles : sequence of Tile
        Axis-aligned tiles at their nominal positions (overlaps are taken from these).
    voxel_size : array_like of 3 floats, optional
        The voxel size (z, y, x) the absolute threshold is counted in (default:
        the first tile's).
    channel : int
        Channel to register on.
    downsample : tuple of 3 ints, optional
        Register on block-mean downsampled tiles (faster; shifts scaled back).
    min_ncc : float
        Links with a lower NCC on the real overlap are not used.
    n_peaks : int
        Phase-correlation peaks tried per pair.
    preset : {"strict", "relaxed"}
        BigStitcher's global optimisation thresholds (relative 2.5 / absolute
        3.5 voxels, or 3.5 / 7).
    thresholds : (float, float), optional
        Explicit (relative, absolute in voxels) thresholds.
    workers : int, optional
        Threads for the pairwise step (default: the CPUs available).
    client : distributed.Client, optional
        Run the pairwise step on this dask cluster instead (each task reads
        only its pair's overlap regions).
    progress : bool
        Show a progress bar over pairs.

    Returns
    -------
    (list of Tile, RegistrationReport)
        The tiles at their registered positions, and what happened.
    """
    tiles = list(tiles)
    _check_axis_aligned(tiles)
    work = [t.select_channels([channel]) if t.n_channels > 1 else t for t in tiles]
    if downsample is not None:
        work = [t.downscale(downsample, method="mean") for t in work]
    overlaps = Layout(work).overlaps()
    task = _PairTask(work, overlaps, n_peaks, min_ncc)
    links = map_in_order(
        task,
        len(overlaps),
        workers=workers,
        client=client,
        progress=progress,
        desc="pairwise",
        unit="pair",
    )
    rel, abs_vox = thresholds or PRESETS[preset]
    vs = tiles[0].voxel_size if voxel_size is None else np.asarray(voxel_size, dtype=float)
    abs_um = abs_vox * float(np.min(vs))
    errors = _optimise(len(tiles), links, rel, abs_um)
    before = np.array([t.offset for t in tiles], dtype=float).reshape(len(tiles), 3)
    after = before + errors
    report = RegistrationReport(links, before, after, _tile_residuals(len(tiles), links))
    logger.info(
        "%d links, %d kept; largest correction %.3g um",
        len(links),
        sum(k.kept for k in links),
        float(np.abs(errors).max(initial=0.0)),
    )
    return [t.with_offset(o) for t, o in zip(tiles, after, strict=True)], report


class _PairTask:
    """One pairwise step: read both tiles' views of an overlap, correlate, return the link."""

    def __init__(self, tiles: list[Any], overlaps: list[Any], n_peaks: int, min_ncc: float) -> None:
        self.tiles, self.overlaps, self.n_peaks, self.min_ncc = tiles, overlaps, n_peaks, min_ncc

    def __call__(self, k: int) -> Link:
        o = self.overlaps[k]
        ti, tj = self.tiles[o.i], self.tiles[o.j]
        a, b = ti.read(o.slices_i, channel=0), tj.read(o.slices_j, channel=0)
        if a.shape != b.shape:  # fractional positions: compare the common part
            common = tuple(min(x, y) for x, y in zip(a.shape, b.shape, strict=True))
            a = a[tuple(slice(0, c) for c in common)]
            b = b[tuple(slice(0, c) for c in common)]
        shift, ncc, n = pairwise_shift(a, b, n_peaks=self.n_peaks)
        # the two views start at slightly different world points when positions are fractional
        start_i = ti.offset + np.array([s.start for s in o.slices_i]) * ti.voxel_size
        start_j = tj.offset + np.array([s.start for s in o.slices_j]) * tj.voxel_size
        shift_um = shift * ti.voxel_size + (start_i - start_j)
        return Link(o.i, o.j, shift_um, ncc, n, kept=ncc >= self.min_ncc)


def _check_axis_aligned(tileset: Sequence[Tile]) -> None:
    """Refuse tiles the translation-only maths cannot register (rotation, shear, mixed voxels)."""
    if not tileset:
        return
    vs0 = tileset[0].voxel_size
    for t in tileset:
        if not t.is_translation:
            msg = (
                f"register() needs axis-aligned tiles (scale + translation); tile {t.name!r} "
                f"has affine {np.round(t.affine, 6).tolist()}: register the tiles before "
                "rotating them, or place them with a BigStitcher XML"
            )
            raise IncompatibleTilesError(msg)
        if not np.allclose(t.voxel_size, vs0, rtol=1e-6):
            msg = (
                f"register() needs one voxel size for all tiles; tile {t.name!r} has "
                f"{t.voxel_size.tolist()} um, tile {tileset[0].name!r} {vs0.tolist()} um "
                "(downscale the finer tiles first)"
            )
            raise IncompatibleTilesError(msg)


def _solve(
    n: int, links: list[Link], scale: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Weighted least-squares translations, one fixed tile per connected group.

    The normal equations of the link graph (a weighted graph Laplacian, made
    positive definite by fixing the first tile of every connected group) are
    factorised once by a sparse LU and solved for the three axes together:
    near-linear in the number of links on tile grids. ``scale`` multiplies the
    weights of the kept links (in their order), for robust reweighting.
    """
    kept = [k for k in links if k.kept]
    e = np.zeros((n, 3))
    if not kept:
        return e
    i = np.fromiter((k.i for k in kept), dtype=np.intp, count=len(kept))
    j = np.fromiter((k.j for k in kept), dtype=np.intp, count=len(kept))
    # links weigh by their NCC and the size of their overlap (a corner sliver counts little)
    n_vox = np.array([max(k.overlap_voxels, 1) for k in kept], dtype=float)
    w2 = np.array([max(k.ncc, 1e-3) for k in kept]) * n_vox / n_vox.max()
    if scale is not None:
        w2 = w2 * scale
    d = np.array([k.shift_um for k in kept], dtype=float).reshape(len(kept), 3)
    graph = sparse.coo_matrix((np.ones(len(kept)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)
    free = np.ones(n, dtype=bool)
    free[first] = False
    if not free.any():
        return e
    # Laplacian L = sum_r w_r (u_j - u_i)(u_j - u_i)^T and right-hand side A^T W d
    rows = np.concatenate([i, j, i, j])
    cols = np.concatenate([i, j, j, i])
    vals = np.concatenate([w2, w2, -w2, -w2])
    lap = sparse.csc_matrix((vals, (rows, cols)), shape=(n, n))
    rhs = np.zeros((n, 3))
    np.add.at(rhs, j, w2[:, None] * d)
    np.subtract.at(rhs, i, w2[:, None] * d)
    idx = np.flatnonzero(free)
    e[idx] = splu(lap[idx][:, idx].tocsc(), permc_spec="MMD_AT_PLUS_A").solve(rhs[idx])
    return e


def _residuals(e: NDArray[np.float64], links: list[Link]) -> NDArray[np.float64]:
    """Length of each link's disagreement with the placement ``e`` (also stored on the links)."""
    i = np.fromiter((k.i for k in links), dtype=np.intp, count=len(links))
    j = np.fromiter((k.j for k in links), dtype=np.intp, count=len(links))
    d = np.array([k.shift_um for k in links], dtype=float).reshape(len(links), 3)
    res = np.linalg.norm(e[j] - e[i] - d, axis=1)
    for k, r in zip(links, res, strict=True):
        k.residual_um = float(r)
    return res


def _robust(n: int, kept: list[Link], c: float, iterations: int = 30) -> NDArray[np.float64]:
    """Iteratively reweighted least squares with a Cauchy loss of scale ``c``.

    Bad links end with small weights, so the placement (and the residuals of
    the good links) is not dragged by them, and every clearly bad link shows
    its full error at once.
    """
    scale = np.ones(len(kept))
    e = _solve(n, kept, scale)
    for _ in range(iterations):
        res = _residuals(e, kept)
        new = 1.0 / (1.0 + (res / c) ** 2)
        e = _solve(n, kept, new)
        if np.max(np.abs(new - scale)) < 1e-3:
            break
        scale = new
    return e


def _optimise(n: int, links: list[Link], rel: float, abs_um: float) -> NDArray[np.float64]:
    """Solve, then drop clearly bad links while errors are too large, never disconnecting a tile.

    A link is too wrong while its residual exceeds both the absolute threshold
    and ``rel`` times the mean residual (BigStitcher's criterion). When the
    least-squares placement has such links, a robust placement (Cauchy-loss
    IRLS, which a few bad links cannot drag) shows which links disagree, and
    every link over the limit there is dropped in one round (worst first,
    skipping any whose removal would disconnect a tile); then the plain
    least-squares placement is checked again. The number of solves does not
    grow with the number of bad links.
    """
    while True:
        e = _solve(n, links)
        kept = [k for k in links if k.kept]
        res = _residuals(e, links)
        if len(kept) < 2:
            return e
        kept_res = res[[k.kept for k in links]]
        if float(kept_res.max()) <= max(abs_um, rel * float(kept_res.mean())):
            return e
        robust = _robust(n, kept, abs_um)
        rres = _residuals(robust, kept)
        limit = max(abs_um, rel * float(np.median(rres)))
        graph = _Graph(kept)
        dropped = False
        for r in np.argsort(-rres):
            if rres[r] <= limit:
                break
            if graph.try_remove(kept[r]):
                kept[r].kept = False
                dropped = True
        if not dropped:  # fall back to the single worst link that can go
            for k in sorted(kept, key=lambda x: -x.residual_um):
                if graph.try_remove(k):
                    k.kept = False
                    dropped = True
                    break
        if not dropped:
            e = _solve(n, links)
            _residuals(e, links)
            return e


class _Graph:
    """Adjacency of the kept links, to ask whether removing one separates its tiles."""

    def __init__(self, links: list[Link]) -> None:
        self.adj: dict[int, dict[int, int]] = {}
        for k in links:
            if k.kept:
                self._edge(k.i, k.j, 1)

    def _edge(self, a: int, b: int, step: int) -> None:
        for u, v in ((a, b), (b, a)):
            nb = self.adj.setdefault(u, {})
            nb[v] = nb.get(v, 0) + step
            if nb[v] == 0:
                del nb[v]

    def try_remove(self, k: Link) -> bool:
        """Remove ``k`` unless that disconnects its tiles; whether it was removed."""
        self._edge(k.i, k.j, -1)
        # breadth-first from both ends at once: on a grid a detour is a few steps away
        seen = [{k.i}, {k.j}]
        fronts = [[k.i], [k.j]]
        while fronts[0] and fronts[1]:
            side = 0 if len(fronts[0]) <= len(fronts[1]) else 1
            nxt = []
            for u in fronts[side]:
                for v in self.adj.get(u, ()):
                    if v in seen[1 - side]:
                        return True
                    if v not in seen[side]:
                        seen[side].add(v)
                        nxt.append(v)
            fronts[side] = nxt
        self._edge(k.i, k.j, 1)
        return False


def _tile_residuals(n: int, links: list[Link]) -> NDArray[np.float64]:
    out = np.zeros(n)
    for k in links:
        if k.kept:
            out[k.i] = max(out[k.i], k.residual_um)
            out[k.j] = max(out[k.j], k.residual_um)
    return out
