"""Blend weights: how overlapping tiles share an output voxel.

``overwrite`` (last or first tile wins), ``max``, ``mean``, ``linear``
(feathered: each tile's weight ramps from its border inwards over
``width`` micrometres, separable over z, y, x) and ``centre`` (each voxel
from the covering tile whose centre is nearest: a Voronoi cut, label-safe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BLEND_MODES", "ramp"]

BlendMode = Literal["overwrite", "max", "mean", "linear", "centre"]
BLEND_MODES: tuple[str, ...] = ("overwrite", "max", "mean", "linear", "centre")

#: modes that never mix values, so they are safe for label images
LABEL_SAFE: tuple[str, ...] = ("overwrite", "centre")

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
