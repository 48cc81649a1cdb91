"""Shading (flat-field and dark-field) estimation from the tiles themselves.

The model is BaSiC's (Peng et al., Nat. Commun. 2017): every plane ``i`` of every
tile is ``P_i(x) = F(x) * b_i + D(x) + S_i(x)`` over the camera's (y, x) field of
view, with a smooth flat-field ``F`` (mean 1), a smooth dark-field ``D``, a
per-plane baseline ``b_i`` and a sparse residual ``S_i`` (the objects, which
are not shading). It is fitted by iteratively reweighted least squares with
Tukey's biweight (the robust counterpart of BaSiC's L1 sparse term) on a
bounded random sample of planes, block-averaged to a small working grid; the
smoothness of ``F`` and ``D`` is a low-order tensor Legendre basis evaluated
at voxel centres, so the full-resolution profiles are exact evaluations of the
fitted fields, not interpolations.

The dark-field is identifiable only up to a multiple of the flat-field (``D +
cF`` with ``b - c`` fits equally well); it is returned with zero mean (the
additive spatial pattern; the mean dark level stays in the data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.polynomial import legendre

from tilefuse.errors import CorrectionError, IncompatibleTilesError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = [
    "ShadingModel",
    "estimate_shading",
    "fit_shading",
    "log_ramp",
    "refine_flatfield",
    "refine_shading",
    "sample_planes",
    "set_ramp",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadingModel:
    """A fitted shading model of one channel.

    Attributes
    ----------
    flatfield : ndarray of shape (y, x), float32
        Multiplicative profile, mean 1.
    darkfield : ndarray of shape (y, x), float32, or None
        Additive profile (zero mean), or None when not estimated.
    baselines : ndarray
        The fitted baseline ``b_i`` of every sampled plane.
    n_planes : int
        Planes in the sample.
    shrinkage : float
        Factor applied to the flat-field's deviation from 1 (1 = none; see
        `estimate_shading`).
    ramp_noise : float
        Standard error of the flat-field's log-linear ramp (`log_ramp`, per
        voxel and axis) from split halves of the sample; 0 when not measured.
    """

    flatfield: NDArray[np.float32]
    darkfield: NDArray[np.float32] | None
    baselines: NDArray[np.float64]
    n_planes: int
    shrinkage: float = 1.0
    ramp_noise: float = 0.0


def sample_planes(
    tiles: Sequence[Tile],
    channel: int = 0,
    *,
    max_planes: int = 200,
    work_size: int = 128,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """A bounded random sample of tile planes, block-averaged to a small working grid.

    Parameters
    ----------
    tiles : sequence of Tile
        Tiles sharing one (y, x) field of view.
    channel : int
        Channel to sample.
    max_planes : int
        Planes read in all (the memory and time bound).
    work_size : int
        Largest side of the working grid; planes are averaged over
        ``f x f`` blocks with ``f = ceil(max(y, x) / work_size)``.
    seed : int
        Random seed (the sample is deterministic).

    Returns
    -------
    planes : ndarray (n, h, w), float32
        The averaged planes.
    yc, xc : ndarray
        Voxel-centre coordinates (in full-resolution voxels) of the working grid.

    Raises
    ------
    IncompatibleTilesError
        If tiles differ in (y, x) shape (one camera field of view is needed).
    """
    fov = {t.shape[1:] for t in tiles}
    if len(fov) != 1:
        msg = f"shading needs tiles of one (y, x) field of view; got shapes {sorted(fov)}"
        raise IncompatibleTilesError(msg)
    ny, nx = fov.pop()
    f = max(1, -(-max(ny, nx) // work_size))
    h, w = ny // f, nx // f
    if h < 4 or w < 4:
        msg = f"tiles of (y, x) = {(ny, nx)} are too small to estimate shading"
        raise CorrectionError(msg)
    pool = [(k, z) for k, t in enumerate(tiles) for z in range(t.shape[0])]
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(pool), size=min(max_planes, len(pool)), replace=False).tolist())
    out = np.empty((len(pick), h, w), dtype=np.float32)
    for n, p in enumerate(pick):
        k, z = pool[p]
        plane = tiles[k].source.read((slice(z, z + 1), slice(0, h * f), slice(0, w * f)))
        plane = np.asarray(plane[channel, 0], dtype=np.float32)
        out[n] = plane.reshape(h, f, w, f).mean(axis=(1, 3))
    # a block of f voxels sits at the mean of their centres
    yc = np.arange(h, dtype=np.float64) * f + (f - 1) / 2
    xc = np.arange(w, dtype=np.float64) * f + (f - 1) / 2
    return out, yc, xc


def _legendre(positions: ArrayLike, n: int, degree: int) -> NDArray[Any]:
    """Legendre polynomials up to ``degree`` at voxel-centre ``positions`` of an axis of ``n``.

    The axis' edges ``[-0.5, n - 0.5]`` map to ``[-1, 1]``; shape ``(len, degree + 1)``.
    """
    return legendre.legvander(2 * (np.asarray(positions, dtype=float) + 0.5) / n - 1, degree)


def _on_grid(coef: NDArray[Any], shape: tuple[int, int], degree: int) -> NDArray[Any]:
    """A tensor Legendre field of coefficients ``coef`` at every voxel centre of ``shape``."""
    ny, nx = shape
    grid = coef.reshape(degree + 1, degree + 1)
    return _legendre(np.arange(ny), ny, degree) @ grid @ _legendre(np.arange(nx), nx, degree).T


def _basis(yc: NDArray[Any], xc: NDArray[Any], ny: int, nx: int, degree: int) -> NDArray[Any]:
    """Tensor Legendre basis ``(len(yc) * len(xc), (degree + 1) ** 2)`` on the field of view."""
    ly, lx = _legendre(yc, ny, degree), _legendre(xc, nx, degree)  # (h, d+1), (w, d+1)
    return np.einsum("ia,jb->ijab", ly, lx).reshape(len(ly) * len(lx), -1)


def _tukey(r: NDArray[Any], scale: NDArray[Any] | float, c: float = 4.685) -> NDArray[Any]:
    u = r / (c * np.maximum(scale, 1e-12))
    return np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)


def _smooth(
    phi: NDArray[Any], values: NDArray[Any], weights: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Weighted least-squares fit of per-pixel values onto the basis; (coefficients, fit)."""
    w = np.maximum(weights, 0)
    gram = phi.T @ (w[:, None] * phi)
    gram += np.eye(len(gram)) * 1e-12 * max(float(np.trace(gram)), 1e-300)
    coef = np.linalg.solve(gram, phi.T @ (w * values))
    return coef, phi @ coef


def fit_shading(
    planes: NDArray[Any],
    yc: NDArray[Any],
    xc: NDArray[Any],
    shape: tuple[int, int],
    *,
    darkfield: bool = False,
    degree: int = 4,
    iterations: int = 5,
) -> ShadingModel:
    """Fit ``P_i = F * b_i + D`` robustly to sampled planes (see the module notes).

    Parameters
    ----------
    planes : ndarray (n, h, w)
        Sampled planes on the working grid (`sample_planes`).
    yc, xc : ndarray
        Voxel-centre coordinates of the working grid in full-resolution voxels.
    shape : (int, int)
        Full-resolution (y, x) field of view.
    darkfield : bool
        Also fit the additive profile (needs planes of different brightness).
    degree : int
        Legendre degree per axis of the smooth profiles (flat-field; the
        dark-field uses ``degree - 2``, at least 2).
    iterations : int
        Reweighting iterations.

    Returns
    -------
    ShadingModel
        Profiles at full resolution.

    Raises
    ------
    CorrectionError
        If the sample holds no usable planes (all blank or constant).
    """
    ny, nx = shape
    n, h, w = planes.shape
    p = planes.reshape(n, h * w).astype(np.float64)
    keep = np.ptp(p, axis=1) > 0
    p = p[keep]
    if len(p) < 2:
        msg = f"shading needs at least 2 non-constant planes; the sample has {len(p)}"
        raise CorrectionError(msg)
    phi_f = _basis(yc, xc, ny, nx, degree)
    dd = max(2, degree - 2)
    phi_d = _basis(yc, xc, ny, nx, dd)
    # initial guess: per-pixel median of planes / their median level, smoothed
    b = np.median(p, axis=1)
    if np.all(b <= 0):
        msg = "shading needs planes with signal; every sampled plane has median <= 0"
        raise CorrectionError(msg)
    ok = b > 0
    _, flat = _smooth(phi_f, np.median(p[ok] / b[ok, None], axis=0), np.ones(h * w))
    flat /= flat.mean()
    dark = np.zeros(h * w)
    spread = float(np.std(b) / max(float(np.mean(np.abs(b))), 1e-12))
    fit_dark = darkfield and spread >= 0.05 and len(p) >= 4
    if darkfield and not fit_dark:
        logger.warning(
            "dark-field not estimated: the sampled planes' brightness varies too little "
            "(relative spread %.3g, %d planes); only the flat-field is fitted",
            spread,
            len(p),
        )
    for _ in range(iterations):
        r = p - b[:, None] * flat[None] - dark[None]
        rs = r[:, ::7]  # the scale from a subset of pixels is as good and 7x cheaper
        scale = 1.4826 * np.median(np.abs(rs - np.median(rs, axis=1, keepdims=True)), axis=1)
        wgt = _tukey(r, scale[:, None])
        sw, swb, swbb = wgt.sum(0), (wgt * b[:, None]).sum(0), (wgt * b[:, None] ** 2).sum(0)
        swp, swbp = (wgt * p).sum(0), (wgt * b[:, None] * p).sum(0)
        if fit_dark:
            det = sw * swbb - swb**2
            good = det > 1e-9 * np.maximum(sw * swbb, 1e-300)
            det = np.where(good, det, 1.0)
            f_px = np.where(good, (sw * swbp - swb * swp) / det, 0.0)
            d_px = np.where(good, (swbb * swp - swb * swbp) / det, 0.0)
            _, flat = _smooth(phi_f, f_px, np.where(good, swbb - swb**2 / np.maximum(sw, 1e-12), 0))
            # refit the dark-field for the smoothed flat-field: D = weighted mean of P - F b
            d_px = (wgt * (p - b[:, None] * flat[None])).sum(0) / np.maximum(sw, 1e-12)
            _, dark = _smooth(phi_d, d_px, sw)
        else:
            f_px = swbp / np.maximum(swbb, 1e-12)
            _, flat = _smooth(phi_f, f_px, swbb)
        # per-plane baselines for the current profiles
        num = (wgt * flat[None] * (p - dark[None])).sum(1)
        den = (wgt * flat[None] ** 2).sum(1)
        b = np.where(den > 0, num / np.maximum(den, 1e-12), b)
        m = flat.mean()
        flat, b = flat / m, b * m
        if fit_dark:  # fix the ambiguity D + cF: zero-mean dark-field
            c = dark.mean()
            dark, b = dark - c * flat, b + c
    if np.any(flat <= 0.05):
        msg = (
            f"the fitted flat-field drops to {flat.min():.3g} of its mean: the sample does not "
            "support a shading estimate (too few planes with signal?)"
        )
        raise CorrectionError(msg)
    full_f = _evaluate(phi_f, flat, (ny, nx), degree)
    full_d = _evaluate(phi_d, dark, (ny, nx), dd) if fit_dark else None
    return ShadingModel(full_f, full_d, b, len(p))


def _evaluate(
    phi: NDArray[Any], fitted: NDArray[Any], shape: tuple[int, int], degree: int
) -> NDArray[np.float32]:
    """The smooth field ``fitted`` (on the working grid) evaluated at every full-res voxel."""
    coef, _ = _smooth(phi, fitted, np.ones(len(phi)))
    return _on_grid(coef, shape, degree).astype(np.float32)


def estimate_shading(
    tiles: Sequence[Tile],
    channel: int = 0,
    *,
    darkfield: bool = False,
    max_planes: int = 200,
    work_size: int = 128,
    degree: int = 4,
    shrink: bool = True,
    seed: int = 0,
) -> ShadingModel:
    """Estimate one channel's flat-field (and dark-field) from a sample of the tiles' planes.

    Parameters
    ----------
    tiles : sequence of Tile
        Tiles sharing one (y, x) field of view (one camera).
    channel : int
        Channel index.
    darkfield : bool
        Also estimate the additive profile.
    max_planes : int
        Planes read in all (bounded memory: ``max_planes * work_size**2`` floats).
    work_size : int
        Largest side of the working grid.
    degree : int
        Smoothness: Legendre degree per axis of the flat-field.
    shrink : bool
        Shrink the flat-field's deviation from 1 by its split-half noise
        (`_shrink`): an image with no real shading gets a flat-field near 1
        rather than a pattern copied from the sample's content.
    seed : int
        Random seed of the plane sample.

    Returns
    -------
    ShadingModel
    """
    planes, yc, xc = sample_planes(
        tiles, channel, max_planes=max_planes, work_size=work_size, seed=seed
    )
    shape = (tiles[0].shape[1], tiles[0].shape[2])
    model = fit_shading(planes, yc, xc, shape, darkfield=darkfield, degree=degree)
    halves = []
    if len(planes) >= 8:
        halves = _split_fits(planes, yc, xc, shape, model.darkfield is not None, degree, seed)
    if halves:
        ramps = np.array([log_ramp(a) - log_ramp(b) for a, b in halves])
        # var(full) ~ var(half) / 2 and var(a - b) = 2 var(half): var(full) ~ mean((a - b)^2) / 4
        noise = float(np.sqrt(np.mean(ramps**2) / 4))
        model = replace(model, ramp_noise=noise)
        if shrink:
            model = _shrink(model, halves)
    logger.info(
        "channel %d: flat-field from %d planes, range %.3g..%.3g",
        channel,
        model.n_planes,
        float(model.flatfield.min()),
        float(model.flatfield.max()),
    )
    return model


#: `refine_shading` solves dense normal equations below this many tile unknowns
DENSE_UNKNOWNS = 2000


def refine_flatfield(
    samples: Sequence[Any],
    gains: NDArray[Any],
    offsets: NDArray[Any],
    prior: NDArray[Any],
    **options: Any,
) -> NDArray[np.float32]:
    """`refine_shading` without a dark-field: the refined flat-field alone."""
    return refine_shading(samples, gains, offsets, prior, **options)[0]


def refine_shading(
    samples: Sequence[Any],
    gains: NDArray[Any],
    offsets: NDArray[Any],
    prior: NDArray[Any],
    *,
    darkfield: NDArray[Any] | None = None,
    reference: int | None = None,
    fit_offsets: bool = True,
    degree: int = 4,
    dark_degree: int = 2,
    prior_weight: float = 1e-4,
    rounds: int = 3,
    iterations: int = 25,
    max_samples: int = 200_000,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Refine shading with overlaps: the same sample seen at two places of the field of view.

    Every matched overlap value says ``a_i (r_i - D(u)) / F(u) + c_i = a_j (r_j -
    D(u')) / F(u') + c_j`` for the flat-field ``F`` (and dark-field ``D``) at the
    two field-of-view positions, free of the sample's content. ``F`` (a tensor
    Legendre polynomial, like the sample estimate), optionally ``D`` (one of
    degree ``dark_degree``) and the per-tile maps ``a * x + c`` are fitted
    jointly to all of them by damped Gauss-Newton (Levenberg-Marquardt), with
    Tukey reweighting between rounds; ``F`` has mean 1, ``D`` mean 0 when
    offsets are fitted (``D + kF`` fits as well as ``D`` with offsets ``c - a
    k``; without offsets ``D`` is whole, a camera offset included) and the
    reference tile keeps ``a = 1, c = 0``. Jointly, because they are strongly coupled (a bowl
    in ``F`` against a trend of the gains): alternating between them converges
    to the sample estimate's bias instead. A polynomial ``F`` is determined by
    its values in the overlap strips (a polynomial equal to its own shifted
    copy on an open set is constant) except for one thing: its log-linear ramp,
    traded against a trend of the gains across the mosaic (`log_ramp`,
    `set_ramp`); that, and whatever the polynomial cannot reach, is held by the
    priors with a total weight of ``prior_weight`` relative to the overlaps.
    ``D`` is told apart from ``F`` by the content: at one pair of positions the
    two views are related affinely, with an intercept that ``D`` sets.

    Parameters
    ----------
    samples : sequence of OverlapSample
        From `tilefuse.equalise.overlap_samples`: dark-field already subtracted,
        or raw when ``darkfield`` is given (it is then fitted).
    gains, offsets : ndarray (n_tiles,)
        Starting per-tile maps (e.g. from `tilefuse.equalise.solve_gains`).
    prior : ndarray (y, x)
        Starting flat-field estimate (mean 1), e.g. `estimate_shading`'s.
    darkfield : ndarray (y, x), optional
        Starting dark-field estimate (zero mean) to fit ``D`` from; None: no
        dark-field in the model.
    reference : int, optional
        Tile kept at ``a = 1, c = 0`` (default: the tile in most samples).
    fit_offsets : bool
        Fit the offsets ``c`` too (otherwise they stay as given).
    degree, dark_degree : int
        Legendre degree per axis of ``F`` and of ``D``.
    prior_weight : float
        Weight of the priors relative to the overlaps.
    rounds, iterations : int
        Reweighting rounds, and damped Gauss-Newton steps per round.
    max_samples : int
        Matched values used at most (a random subset beyond it): the memory bound.
    seed : int
        Seed of that subset.

    Returns
    -------
    (ndarray (y, x) float32, ndarray (y, x) float32 or None)
        The refined flat-field (mean 1) and dark-field (mean 0 with
        ``fit_offsets``; None without ``darkfield``). The priors when there
        are no samples, or when the fit leaves a non-positive flat-field.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    ny, nx = prior.shape
    keep_prior = (
        prior.astype(np.float32),
        None if darkfield is None else np.asarray(darkfield, dtype=np.float32),
    )
    samples = [s for s in samples if len(s.values_i)]
    if not samples:
        return keep_prior
    n = len(gains)
    ti = np.concatenate([np.full(len(s.values_i), s.i) for s in samples])
    tj = np.concatenate([np.full(len(s.values_j), s.j) for s in samples])
    pts = [np.concatenate([getattr(s, k) for s in samples]) for k in ("yi", "xi", "yj", "xj")]
    vi = np.concatenate([s.values_i for s in samples]).astype(np.float64)
    vj = np.concatenate([s.values_j for s in samples]).astype(np.float64)
    if len(vi) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(vi), max_samples, replace=False))
        ti, tj, vi, vj = ti[keep], tj[keep], vi[keep], vj[keep]
        pts = [p[keep] for p in pts]
    fit_dark = darkfield is not None
    dd = dark_degree if fit_dark else -1
    bi = _basis_points(pts[0], pts[1], ny, nx, degree)
    bj = _basis_points(pts[2], pts[3], ny, nx, degree)
    di = _basis_points(pts[0], pts[1], ny, nx, dd) if fit_dark else np.zeros((len(vi), 0))
    dj = _basis_points(pts[2], pts[3], ny, nx, dd) if fit_dark else np.zeros((len(vi), 0))
    level = float(np.median(np.abs(vi))) * float(np.median(np.abs(gains))) or 1.0
    vi, vj = vi / level, vj / level
    m, npar, ndark = len(vi), bi.shape[1], di.shape[1]
    nshape = npar + ndark
    ref = int(reference) if reference is not None else int(np.bincount(np.r_[ti, tj]).argmax())
    free = np.array([k for k in range(n) if k != ref], dtype=np.intp)
    col = np.full(n, -1)
    col[free] = np.arange(len(free))
    nt = len(free) * (2 if fit_offsets else 1)
    # priors (F and D on a coarse grid) and the means of F and D over the voxel centres
    gy = (np.arange(32) + 0.5) * ny / 32 - 0.5
    gx = (np.arange(32) + 0.5) * nx / 32 - 0.5
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    iy = np.clip(np.rint(yy.ravel()).astype(int), 0, ny - 1)
    ix = np.clip(np.rint(xx.ravel()).astype(int), 0, nx - 1)
    pp = _basis_points(yy.ravel(), xx.ravel(), ny, nx, degree)
    pd = _basis_points(yy.ravel(), xx.ravel(), ny, nx, dd) if fit_dark else np.zeros((len(iy), 0))
    prior_rows = np.zeros((2 * len(iy), nshape))
    prior_rows[: len(iy), :npar] = pp
    prior_rows[len(iy) :, npar:] = pd
    pf = prior[iy, ix].astype(np.float64)
    pdv = np.asarray(darkfield, float)[iy, ix] / level if fit_dark else np.zeros(len(iy))
    prior_vals = np.r_[pf, pdv if fit_dark else np.zeros(len(iy))]

    def axis_means(deg: int) -> NDArray[Any]:
        """The mean over the voxel centres of each tensor Legendre basis function."""
        my = _legendre(np.arange(ny), ny, deg).mean(0)
        return np.outer(my, _legendre(np.arange(nx), nx, deg).mean(0)).ravel()

    mean_rows = np.zeros((2, nshape))
    mean_rows[0, :npar] = axis_means(degree)
    if fit_dark and fit_offsets:  # D + kF with offsets c - a k fits as well: mean D = 0
        mean_rows[1, npar:] = axis_means(dd)
    mean_vals = np.array([1.0, 0.0])
    wp2 = prior_weight * m / len(pp)
    wm2 = float(m)  # mean F = 1, mean D = 0: as heavy as all the overlaps together
    eps = 1e-6 * m / max(n, 1)  # keeps tiles without samples where they are
    shape = np.linalg.lstsq(prior_rows, prior_vals, rcond=None)[0]
    shape[:npar] /= mean_rows[0] @ shape
    a = np.asarray(gains, dtype=np.float64).copy()
    c = np.asarray(offsets, dtype=np.float64) / level
    a0, c0 = a.copy(), c.copy()
    rows = np.arange(m)
    mi, mj = col[ti] >= 0, col[tj] >= 0

    def residual(sh: NDArray[Any], a: NDArray[Any], c: NDArray[Any]) -> Any:
        fi, fj = bi @ sh[:npar], bj @ sh[:npar]
        ei, ej = vi - di @ sh[npar:], vj - dj @ sh[npar:]  # dark-subtracted values
        return fi, fj, ei, ej, a[ti] * ei / fi + c[ti] - a[tj] * ej / fj - c[tj]

    def cost(sh: NDArray[Any], a: NDArray[Any], c: NDArray[Any], w: NDArray[Any]) -> float:
        fi, fj, _, _, r = residual(sh, a, c)
        if min(fi.min(), fj.min(), (pp @ sh[:npar]).min()) <= 0.05:
            return np.inf
        extra = wp2 * np.sum((prior_rows @ sh - prior_vals) ** 2)
        extra += wm2 * np.sum((mean_rows @ sh - mean_vals) ** 2)
        pull = eps * (np.sum((a - a0) ** 2) + np.sum((c - c0) ** 2))
        return float(np.sum(w * r * r) + extra + pull)

    # the normal equations' parts that do not change: prior and mean rows, the pull on tiles
    constant: Any = sparse.block_diag(
        [
            wp2 * prior_rows.T @ prior_rows + wm2 * mean_rows.T @ mean_rows,
            sparse.identity(nt) * eps,
        ],
        format="csc",
    )
    dense = nt < DENSE_UNKNOWNS  # up to ~1000 tiles: dense normal equations; beyond, sparse LU
    if dense:
        constant = constant.toarray()
    w = np.ones(m)
    for rnd in range(rounds):
        if rnd:
            r = residual(shape, a, c)[4]
            scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
            w = _tukey(r, scale)
        lam, current = 1e-3, cost(shape, a, c, w)
        if not np.isfinite(current):
            break
        for _ in range(iterations):
            fi, fj, ei, ej, r = residual(shape, a, c)
            jshape = np.hstack(
                [
                    -(a[ti] * ei / fi**2)[:, None] * bi + (a[tj] * ej / fj**2)[:, None] * bj,
                    -(a[ti] / fi)[:, None] * di + (a[tj] / fj)[:, None] * dj,
                ]
            )
            parts = [
                (rows[mi], col[ti[mi]], (ei / fi)[mi]),
                (rows[mj], col[tj[mj]], -(ej / fj)[mj]),
            ]
            if fit_offsets:
                parts += [
                    (rows[mi], len(free) + col[ti[mi]], np.ones(mi.sum())),
                    (rows[mj], len(free) + col[tj[mj]], -np.ones(mj.sum())),
                ]
            rr, cc, vv = (np.concatenate(v) for v in zip(*parts, strict=True))
            jtiles = sparse.csr_matrix((vv, (rr, cc)), shape=(m, nt))
            jac = sparse.hstack([sparse.csr_matrix(jshape), jtiles]).tocsr()
            wj = sparse.diags(w) @ jac
            normal = jac.T @ wj
            base = (normal.toarray() if dense else normal.tocsc()) + constant
            diag = base.diagonal()
            grad = np.asarray(wj.T @ r).ravel()
            grad[:nshape] += wp2 * prior_rows.T @ (prior_rows @ shape - prior_vals)
            grad[:nshape] += wm2 * mean_rows.T @ (mean_rows @ shape - mean_vals)
            pulled = [a[free] - a0[free]] + ([c[free] - c0[free]] if fit_offsets else [])
            grad[nshape:] += eps * np.concatenate(pulled)
            improved = False
            for _ in range(8):
                # Levenberg-Marquardt: the diagonal scaled up by 1 + lam
                if dense:
                    step = np.linalg.solve(base + np.diag(lam * diag + 1e-15), -grad)
                else:
                    step = spsolve((base + sparse.diags(lam * diag)).tocsc(), -grad)
                sh2 = shape + step[:nshape]
                a2, c2 = a.copy(), c.copy()
                a2[free] += step[nshape : nshape + len(free)]
                if fit_offsets:
                    c2[free] += step[nshape + len(free) :]
                new = cost(sh2, a2, c2, w)
                if new < current:
                    shape, a, c = sh2, a2, c2
                    lam = max(lam / 3, 1e-9)
                    improved = current - new > 1e-12 * current
                    current = new
                    break
                lam *= 10
            if not improved:
                break
    flat = _on_grid(shape[:npar], (ny, nx), degree)
    if not np.isfinite(flat).all() or flat.min() <= 0.05 * flat.mean():
        logger.warning(
            "overlap refinement of the flat-field failed (F <= 0 somewhere): the overlaps do "
            "not fit a smooth flat-field; keeping the sample estimate"
        )
        return keep_prior
    dark: NDArray[np.float32] | None = None
    if fit_dark:
        d = _on_grid(shape[npar:], (ny, nx), dd) * level
        if fit_offsets:
            d = d - flat / flat.mean() * d.mean()
        dark = d.astype(np.float32)
    return (flat / flat.mean()).astype(np.float32), dark


def _basis_points(y: NDArray[Any], x: NDArray[Any], ny: int, nx: int, degree: int) -> NDArray[Any]:
    """Tensor Legendre basis at scattered voxel-centre points ``(len(y), (degree + 1) ** 2)``."""
    ly, lx = _legendre(y, ny, degree), _legendre(x, nx, degree)
    return np.einsum("ka,kb->kab", ly, lx).reshape(len(ly), -1)


def _split_fits(
    planes: NDArray[Any],
    yc: NDArray[Any],
    xc: NDArray[Any],
    shape: tuple[int, int],
    dark: bool,
    degree: int,
    seed: int,
    splits: int = 3,
) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Flat-fields fitted to the two halves of ``splits`` random splits of the sample.

    A split whose half does not support a fit (too few planes with signal for a
    dark-field, say) is left out; no split at all means the noise is unknown.
    """
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(splits):
        order = rng.permutation(len(planes))
        half = len(planes) // 2
        try:
            fa, fb = (
                fit_shading(planes[idx], yc, xc, shape, darkfield=dark, degree=degree).flatfield
                for idx in (order[:half], order[half:])
            )
        except CorrectionError as e:
            logger.info("a split half of the shading sample does not fit (%s); left out", e)
            continue
        out.append((fa, fb))
    return out


def _shrink(
    model: ShadingModel, halves: Sequence[tuple[NDArray[Any], NDArray[Any]]]
) -> ShadingModel:
    """James-Stein shrinkage of ``F - 1`` by the estimate's own noise.

    The variance of the full estimate is about ``mean((F_a - F_b)^2) / 4`` for
    the flat-fields ``F_a``, ``F_b`` of two random halves of the sample
    (averaged over the splits); the deviation from a flat field is scaled by
    ``max(0, 1 - noise / mean((F - 1)^2))``.
    """
    noise = float(np.mean([np.mean((a.astype(float) - b) ** 2) for a, b in halves])) / 4
    dev = model.flatfield.astype(float) - 1
    signal = float(np.mean(dev**2))
    factor = max(0.0, 1 - noise / signal) if signal > 0 else 0.0
    if factor < 0.99:
        logger.info(
            "flat-field deviation shrunk by %.3g (split-half noise %.3g of the deviation)",
            factor,
            noise / max(signal, 1e-300),
        )
    flat = (1 + factor * dev).astype(np.float32)
    return replace(model, flatfield=flat, shrinkage=factor)


def _centred_grid(ny: int, nx: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    y = np.arange(ny, dtype=np.float64) - (ny - 1) / 2
    x = np.arange(nx, dtype=np.float64) - (nx - 1) / 2
    return y, x


def log_ramp(flat: NDArray[Any]) -> NDArray[np.float64]:
    """The log-linear ramp of a flat-field: slopes ``(by, bx)`` of ``log F`` per voxel.

    The least-squares plane through ``log F`` over the field of view (its
    constant and linear Legendre part). This is the one component of a
    flat-field that tile overlaps cannot tell from a trend of the tile gains
    across the mosaic (see `set_ramp`).
    """
    f = np.log(np.maximum(np.asarray(flat, dtype=np.float64), 1e-12))
    y, x = _centred_grid(*f.shape)
    by = float((f.mean(axis=1) * y).sum() / max(float((y * y).sum()), 1e-300))
    bx = float((f.mean(axis=0) * x).sum() / max(float((x * x).sum()), 1e-300))
    return np.array([by, bx])


def set_ramp(flat: NDArray[Any], slope: ArrayLike) -> NDArray[np.float32]:
    """``flat`` with its log-linear ramp (`log_ramp`) replaced by ``slope``; mean 1."""
    d = np.asarray(slope, dtype=np.float64) - log_ramp(flat)
    y, x = _centred_grid(*flat.shape)
    out = flat * np.exp(d[0] * y)[:, None] * np.exp(d[1] * x)[None, :]
    return (out / out.mean()).astype(np.float32)
