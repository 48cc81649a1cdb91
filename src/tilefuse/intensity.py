"""Intensity tools: global percentiles from a bounded sample, lazy scaling to uint8, previews."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import ParameterError
from tilefuse.layout import Layout
from tilefuse.source import WrappedSource, full_region

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = ["ScaledSource", "intensity_range", "preview", "show_slice", "to_png"]

logger = logging.getLogger(__name__)


def intensity_range(
    tiles: Sequence[Tile],
    p: Sequence[float] = (1.0, 99.9),
    *,
    max_samples: int = 2_000_000,
    planes_per_tile: int = 4,
    seed: int = 0,
) -> NDArray[np.float64]:
    """Global intensity percentiles of all tiles, from a bounded random sample.

    The sample pools voxels from every tile (in proportion to its size) and
    then takes the percentiles once, so it estimates the global percentiles,
    not an average of per-tile ones. Only ``planes_per_tile`` random z planes
    of each tile are read.

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles.
    p : sequence of 2 floats
        Lower and upper percentiles (0-100).
    max_samples : int
        Voxels kept per channel in all (memory bound).
    planes_per_tile : int
        Random z planes read from each tile.
    seed : int
        Random seed (the result is deterministic).

    Returns
    -------
    ndarray of shape (c, 2)
        ``(low, high)`` per channel.
    """
    rng = np.random.default_rng(seed)
    sizes = np.array([np.prod(t.shape) for t in tiles], dtype=float)
    quota = np.maximum(1, (max_samples * sizes / sizes.sum()).astype(int))
    pools: list[NDArray[Any]] = []
    for t, q in zip(tiles, quota, strict=True):
        nz = t.shape[0]
        zs = np.sort(rng.choice(nz, size=min(planes_per_tile, nz), replace=False))
        planes = np.concatenate(
            [t.source.read((slice(z, z + 1), *full_region(t.shape)[1:])) for z in zs], axis=1
        ).reshape(t.n_channels, -1)
        keep = rng.choice(planes.shape[1], size=min(int(q), planes.shape[1]), replace=False)
        pools.append(planes[:, keep])
    sample = np.concatenate(pools, axis=1).astype(np.float64)
    return np.stack(
        [np.percentile(sample, p, axis=1)[0], np.percentile(sample, p, axis=1)[1]], axis=1
    )


class ScaledSource(WrappedSource):
    """A source mapped lazily to uint8: ``clip((x - low) / (high - low), 0, 1) * 255``.

    The underlying source is never modified.
    """

    def __init__(self, source: Any, low: ArrayLike, high: ArrayLike) -> None:
        c = source.shape[0]
        self.source = source
        self.low = np.broadcast_to(np.asarray(low, dtype=np.float64), (c,)).copy()
        self.high = np.broadcast_to(np.asarray(high, dtype=np.float64), (c,)).copy()
        if np.any(self.high <= self.low):
            msg = f"intensity range must have high > low, got {self.low} .. {self.high}"
            raise ParameterError(msg)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self.source.shape  # type: ignore[no-any-return]

    @property
    def dtype(self) -> np.dtype[Any]:
        """uint8."""
        return np.dtype(np.uint8)

    def _read(self, region: Region) -> NDArray[np.uint8]:
        """Read a region and scale it to uint8."""
        data = self.source.read(region).astype(np.float32)
        lo = self.low.reshape(-1, 1, 1, 1).astype(np.float32)
        span = (self.high - self.low).reshape(-1, 1, 1, 1).astype(np.float32)
        return np.rint(np.clip((data - lo) / span, 0, 1) * 255).astype(np.uint8)


def preview(
    tiles: Sequence[Tile],
    *,
    voxel_size: ArrayLike | None = None,
    z: float | None = None,
    projection: Literal["max"] | None = None,
    downsample: int = 4,
    blend: str = "overwrite",
) -> NDArray[Any]:
    """A 2D mosaic at world depth ``z`` (or a max projection), reading only what it needs.

    The tiles are read downsampled in y and x (every ``downsample``-th voxel;
    z is not downsampled) and fused onto the grid `Tileset.fuse` would use at
    that scale, for the one plane that contains ``z``: the preview equals
    ``tileset.downscale((1, f, f), "stride").fuse()[k]``. Only the tile
    planes that intersect that output plane are read.

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles.
    voxel_size : array_like of 3 floats, optional
        Voxel size (z, y, x) before downsampling (default: the first tile's).
    z : float, optional
        World depth in micrometres (default: the middle of the tileset).
    projection : {"max"}, optional
        Instead of one plane, the maximum over all planes (read plane by plane).
    downsample : int
        Factor in y and x.
    blend : str
        Fusion rule for overlaps (default ``overwrite``: cheapest).

    Returns
    -------
    ndarray
        ``(y, x)`` (or ``(c, y, x)`` for several channels).
    """
    from tilefuse.fuse import FusionPlan, OutputGrid

    f = (1, downsample, downsample)
    small = [t.downscale(f, method="stride") for t in tiles]
    vs = tiles[0].voxel_size if voxel_size is None else np.asarray(voxel_size, dtype=float)
    grid = OutputGrid.covering(small, vs * f)
    plan = FusionPlan(small, grid, blend=blend)
    ny, nx = grid.shape[1:]
    if projection == "max":
        out = None
        for k in range(grid.shape[0]):
            plane = plan.render((slice(k, k + 1), slice(0, ny), slice(0, nx)))[:, 0]
            out = plane if out is None else np.maximum(out, plane)
        assert out is not None
    elif projection is None:
        lo, hi = Layout(tiles).bounds
        zz = (lo[0] + hi[0]) / 2 if z is None else float(z)
        # the plane whose voxels hold z (grid.origin is the centre of plane 0)
        k = int(np.floor((zz - grid.origin[0]) / grid.voxel_size[0] + 0.5 + 1e-9))
        if not 0 <= k < grid.shape[0]:
            msg = f"z = {zz} um is outside the tileset ({lo[0]} .. {hi[0]} um)"
            raise ParameterError(msg)
        out = plan.render((slice(k, k + 1), slice(0, ny), slice(0, nx)))[:, 0]
    else:
        msg = f"projection must be None or 'max', got {projection!r}"
        raise ParameterError(msg)
    return out[0] if out.shape[0] == 1 else out


def _to_uint8(image: NDArray[Any], p: Sequence[float] = (1.0, 99.9)) -> NDArray[np.uint8]:
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, p)
    hi = hi if hi > lo else lo + 1
    return np.rint(np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def to_png(
    image: ArrayLike, path: str | os.PathLike[str], *, p: Sequence[float] = (1.0, 99.9)
) -> Path:
    """Save a 2D image (or ``(3, y, x)`` RGB) as PNG, contrast-stretched between percentiles."""
    import imagecodecs

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3:
        img = np.moveaxis(img, 0, -1)
    elif img.ndim != 2:
        msg = f"to_png takes a 2D image or (3, y, x) RGB, got shape {img.shape}"
        raise ParameterError(msg)
    path = Path(path)
    path.write_bytes(imagecodecs.png_encode(_to_uint8(img, p)))
    return path


def show_slice(image: ArrayLike, *, ax: Any = None, title: str | None = None, **imshow: Any) -> Any:
    """Show a 2D image with matplotlib (percentile contrast); returns the axes."""
    from tilefuse._optional import require

    plt = require("matplotlib.pyplot", "plot", "show_slice")

    if ax is None:
        _, ax = plt.subplots()
    ax.imshow(_to_uint8(np.asarray(image)), cmap=imshow.pop("cmap", "gray"), **imshow)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax
