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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.polynomial import legendre

from tilefuse.errors import CorrectionError, IncompatibleTilesError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.tile import Tile

__all__ = ["ShadingModel", "estimate_shading", "fit_shading", "sample_planes"]

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
    """

    flatfield: NDArray[np.float32]
    darkfield: NDArray[np.float32] | None
    baselines: NDArray[np.float64]
    n_planes: int
    shrinkage: float = 1.0


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


def _basis(yc: NDArray[Any], xc: NDArray[Any], ny: int, nx: int, degree: int) -> NDArray[Any]:
    """Tensor Legendre basis ``(len(yc) * len(xc), (degree + 1) ** 2)`` on the field of view."""
    # map voxel centres so the field of view's edges [-0.5, n - 0.5] go to [-1, 1]
    u = (2 * (np.asarray(yc, dtype=float) + 0.5) / ny) - 1
    v = (2 * (np.asarray(xc, dtype=float) + 0.5) / nx) - 1
    ly = legendre.legvander(u, degree)  # (h, d+1)
    lx = legendre.legvander(v, degree)  # (w, d+1)
    return np.einsum("ia,jb->ijab", ly, lx).reshape(len(u) * len(v), -1)


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
    ny, nx = shape
    coef, _ = _smooth(phi, fitted, np.ones(len(phi)))
    ly = legendre.legvander((2 * (np.arange(ny) + 0.5) / ny) - 1, degree)
    lx = legendre.legvander((2 * (np.arange(nx) + 0.5) / nx) - 1, degree)
    return (ly @ coef.reshape(degree + 1, degree + 1) @ lx.T).astype(np.float32)


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
    if shrink and len(planes) >= 8:
        model = _shrink(model, planes, yc, xc, shape, degree, seed)
    logger.info(
        "channel %d: flat-field from %d planes, range %.3g..%.3g",
        channel,
        model.n_planes,
        float(model.flatfield.min()),
        float(model.flatfield.max()),
    )
    return model


def refine_flatfield(
    samples: Sequence[Any],
    gains: NDArray[Any],
    offsets: NDArray[Any],
    prior: NDArray[Any],
    *,
    degree: int = 6,
    prior_weight: float = 0.05,
    iterations: int = 3,
) -> NDArray[np.float32]:
    """Refine a flat-field with overlaps: the same sample seen at two places of the field of view.

    With per-tile maps ``a * x + c`` fixed, every matched overlap value gives
    ``a_i r_i h(u) - a_j r_j h(u') = c_j - c_i`` for the inverse flat-field
    ``h = 1 / F`` at the two field-of-view positions: linear in ``h``, free of
    the sample's content. ``h`` is a tensor Legendre polynomial; the
    sample-based estimate ``prior`` pins what overlaps never see (the centre)
    with a total weight of ``prior_weight`` relative to the overlaps. Solved by
    Tukey-reweighted least squares.

    Parameters
    ----------
    samples : sequence of OverlapSample
        From `tilefuse.equalise.overlap_samples` (dark-field already subtracted).
    gains, offsets : ndarray (n_tiles,)
        Current per-tile maps.
    prior : ndarray (y, x)
        Current flat-field estimate (mean 1).
    degree : int
        Legendre degree per axis of ``h``.
    prior_weight : float
        Weight of the prior relative to the overlaps.
    iterations : int
        Reweighting iterations.

    Returns
    -------
    ndarray (y, x) float32
        The refined flat-field, mean 1 (``prior`` when there are no samples).
    """
    ny, nx = prior.shape
    if not samples:
        return prior.astype(np.float32)
    rows, rhs = [], []
    for s in samples:
        pi = _basis_points(s.yi, s.xi, ny, nx, degree)
        pj = _basis_points(s.yj, s.xj, ny, nx, degree)
        rows.append(gains[s.i] * s.values_i[:, None] * pi - gains[s.j] * s.values_j[:, None] * pj)
        rhs.append(np.full(len(s.values_i), offsets[s.j] - offsets[s.i]))
    a = np.concatenate(rows)
    y = np.concatenate(rhs)
    level = float(np.median(np.abs(np.concatenate([s.values_i for s in samples]))))
    level = level * float(np.median(gains)) or 1.0
    a, y = a / level, y / level
    # the prior on a coarse grid of the field of view
    gy = (np.arange(32) + 0.5) * ny / 32 - 0.5
    gx = (np.arange(32) + 0.5) * nx / 32 - 0.5
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    pp = _basis_points(yy.ravel(), xx.ravel(), ny, nx, degree)
    iy = np.clip(np.rint(yy.ravel()).astype(int), 0, ny - 1)
    ix = np.clip(np.rint(xx.ravel()).astype(int), 0, nx - 1)
    ph = 1.0 / prior[iy, ix].astype(np.float64)
    wp = np.sqrt(prior_weight * len(a) / len(pp))
    w = np.ones(len(a))
    for _ in range(iterations):
        sw = np.sqrt(w)[:, None]
        m = np.concatenate([a * sw, pp * wp])
        v = np.concatenate([y * sw[:, 0], ph * wp])
        gram = m.T @ m
        coef = np.linalg.solve(gram + np.eye(len(gram)) * 1e-12 * np.trace(gram), m.T @ v)
        r = a @ coef - y
        scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        w = _tukey(r, scale)
    ly = legendre.legvander((2 * (np.arange(ny) + 0.5) / ny) - 1, degree)
    lx = legendre.legvander((2 * (np.arange(nx) + 0.5) / nx) - 1, degree)
    h = ly @ coef.reshape(degree + 1, degree + 1) @ lx.T
    if np.any(h <= 0):
        logger.warning("overlap refinement of the flat-field failed (h <= 0); keeping the prior")
        return prior.astype(np.float32)
    flat = 1.0 / h
    return (flat / flat.mean()).astype(np.float32)


def _basis_points(y: NDArray[Any], x: NDArray[Any], ny: int, nx: int, degree: int) -> NDArray[Any]:
    """Tensor Legendre basis at scattered voxel-centre points ``(len(y), (degree + 1) ** 2)``."""
    ly = legendre.legvander(2 * (np.asarray(y, float) + 0.5) / ny - 1, degree)
    lx = legendre.legvander(2 * (np.asarray(x, float) + 0.5) / nx - 1, degree)
    return np.einsum("ka,kb->kab", ly, lx).reshape(len(ly), -1)


def _shrink(
    model: ShadingModel,
    planes: NDArray[Any],
    yc: NDArray[Any],
    xc: NDArray[Any],
    shape: tuple[int, int],
    degree: int,
    seed: int,
) -> ShadingModel:
    """James-Stein shrinkage of ``F - 1`` by the estimate's own noise.

    Fits the two random halves of the sample separately: the variance of the
    full estimate is about ``mean((F_a - F_b)^2) / 4``; the deviation from a
    flat field is scaled by ``max(0, 1 - noise / mean((F - 1)^2))``.
    """
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(planes))
    half = len(planes) // 2
    dark = model.darkfield is not None
    fa = fit_shading(planes[order[:half]], yc, xc, shape, darkfield=dark, degree=degree).flatfield
    fb = fit_shading(planes[order[half:]], yc, xc, shape, darkfield=dark, degree=degree).flatfield
    noise = float(np.mean((fa.astype(float) - fb) ** 2)) / 4
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
    return ShadingModel(flat, model.darkfield, model.baselines, model.n_planes, factor)
