"""Block-wise downsampling kernels: mean (images), mode (labels), nearest.

All kernels reduce the last three axes ``(z, y, x)`` by integer factors and
produce ``ceil(n / f)`` outputs per axis. A partial window at the far edge uses
only the voxels that exist (no padding values leak in, no edge replication).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import ParameterError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = ["METHODS", "downsample", "downsample_factors"]

Method = Literal["mean", "mode", "nearest"]
METHODS: tuple[str, ...] = ("mean", "mode", "nearest")


def downsample_factors(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Factors (z, y, x) for the next pyramid level.

    y and x halve; z halves only while it is not already coarser than twice
    the finer of y and x, so anisotropic stacks approach isotropy first. An
    axis of size 1 keeps factor 1.
    """
    vz, vy, vx = (float(v) for v in voxel_size)
    fz = 1 if vz >= 2 * min(vy, vx) else 2
    return (
        fz if shape[-3] > 1 else 1,
        2 if shape[-2] > 1 else 1,
        2 if shape[-1] > 1 else 1,
    )


def _windows(a: NDArray[Any], factors: Sequence[int]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Pad ``a`` to whole windows; return it as (..., Z, Y, X, k) plus a validity mask."""
    lead = a.shape[:-3]
    sp = a.shape[-3:]
    out = tuple(-(-n // f) for n, f in zip(sp, factors, strict=True))
    pad = [(0, 0)] * len(lead) + [(0, o * f - n) for o, f, n in zip(out, factors, sp, strict=True)]
    padded = np.pad(a, pad) if any(p[1] for p in pad) else a
    shape = (*lead, out[0], factors[0], out[1], factors[1], out[2], factors[2])
    w = padded.reshape(shape)
    nl = len(lead)
    perm = (*range(nl), nl, nl + 2, nl + 4, nl + 1, nl + 3, nl + 5)
    w = w.transpose(perm).reshape((*lead, *out, -1))
    valid = np.zeros(tuple(o * f for o, f in zip(out, factors, strict=True)), dtype=bool)
    valid[: sp[0], : sp[1], : sp[2]] = True
    valid = (
        valid.reshape(out[0], factors[0], out[1], factors[1], out[2], factors[2])
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape((*out, -1))
    )
    return w, valid


def _mean(a: NDArray[Any], factors: Sequence[int]) -> NDArray[Any]:
    """Window mean by strided adds (no window copies); partial edge windows averaged as they are."""
    sp = a.shape[-3:]
    out_sp = tuple(-(-n // f) for n, f in zip(sp, factors, strict=True))
    is_int = np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_
    small = is_int and a.dtype.itemsize <= 2 and int(np.prod(factors)) <= 1 << 15
    acc_dt = (np.int32 if small else np.int64) if is_int else np.float64
    acc = np.zeros((*a.shape[:-3], *out_sp), dtype=acc_dt)
    for dz in range(factors[0]):
        for dy in range(factors[1]):
            for dx in range(factors[2]):
                sub = a[..., dz :: factors[0], dy :: factors[1], dx :: factors[2]]
                acc[..., : sub.shape[-3], : sub.shape[-2], : sub.shape[-1]] += sub
    # voxels per window: the outer product of per-axis counts (smaller at a partial edge)
    per_axis = [
        np.minimum(f, n - np.arange(o) * f) for n, f, o in zip(sp, factors, out_sp, strict=True)
    ]
    count = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    if not is_int:
        return (acc / count).astype(a.dtype)
    # round half up, in integers: floor((2 * sum + count) / (2 * count)); windows that
    # are complete and hold a power-of-two count take the same rounding as a shift
    k = int(np.prod(factors))
    out = np.empty(acc.shape, dtype=a.dtype)
    full = tuple(n // f for n, f in zip(sp, factors, strict=True))
    inner = (..., slice(0, full[0]), slice(0, full[1]), slice(0, full[2]))
    if k & (k - 1) == 0:
        out[inner] = (acc[inner] + k // 2) >> (k.bit_length() - 1)
    else:
        out[inner] = (acc[inner] + k // 2) // k
    for ax in range(3):  # partial windows along the far faces
        if full[ax] < out_sp[ax]:
            face = [slice(None)] * 3
            face[ax] = slice(full[ax], None)
            sl: tuple[Any, ...] = (..., *face)
            out[sl] = (2 * acc[sl] + count[tuple(face)]) // (2 * count[tuple(face)])
    return out


def _mode(a: NDArray[Any], factors: Sequence[int]) -> NDArray[Any]:
    w, valid = _windows(a, factors)
    k = w.shape[-1]
    validb = np.broadcast_to(valid, w.shape)
    counts = np.zeros(w.shape, dtype=np.int16)
    for j in range(k):
        counts += (w == w[..., j : j + 1]) & validb[..., j : j + 1]
    # a nonzero label wins every tie against background; among labels the
    # first in voxel (C) order of the window wins
    score = counts.astype(np.int32) * 2 + (w != 0)
    score[~validb] = -1
    pick = np.argmax(score, axis=-1)
    return np.take_along_axis(w, pick[..., None], axis=-1)[..., 0]


def _nearest(a: NDArray[Any], factors: Sequence[int]) -> NDArray[Any]:
    return a[..., :: factors[0], :: factors[1], :: factors[2]].copy()


def downsample(a: NDArray[Any], factors: Sequence[int], method: Method = "mean") -> NDArray[Any]:
    """Downsample the last three axes of ``a`` by integer ``factors``.

    Parameters
    ----------
    a : ndarray
        ``(..., z, y, x)``.
    factors : sequence of 3 ints
        Factors (z, y, x), each >= 1.
    method : {"mean", "mode", "nearest"}
        ``mean`` averages each window (integers accumulate in int64 and round
        half up, so results are exact and backend-independent); ``mode`` keeps
        the most frequent value (labels: a nonzero label wins a tie against
        background 0; ties between labels go to the first in voxel order;
        never invents values); ``nearest`` takes the first voxel of each window.

    Returns
    -------
    ndarray
        Same dtype, last three axes ``ceil(n / f)``.
    """
    factors = tuple(int(f) for f in factors)
    if len(factors) != 3 or min(factors) < 1:
        msg = f"factors must be 3 integers >= 1, got {factors}"
        raise ParameterError(msg)
    if factors == (1, 1, 1):
        return a.copy()
    if method == "mean":
        return _mean(a, factors)
    if method == "mode":
        return _mode(a, factors)
    if method == "nearest":
        return _nearest(a, factors)
    msg = f"method must be one of {METHODS}, got {method!r}"
    raise ParameterError(msg)
