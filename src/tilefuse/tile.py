"""`Tile`: one field of view = a lazy pixel source + a placement in micrometres."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import ParameterError, ParameterTypeError
from tilefuse.geometry import affine_from_offset, box_of, is_translation
from tilefuse.source import ArraySource, PixelSource, normalize_region

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = ["Tile", "parse_affine"]


def parse_affine(affine: ArrayLike) -> NDArray[np.float64]:
    """Validate a 4x4 (z, y, x) affine and return it as a read-only float array.

    Raises
    ------
    ValueError
        If the shape is not (4, 4), the last row is not (0, 0, 0, 1), values
        are not finite or the linear part is singular.
    """
    a = np.array(affine, dtype=float)
    if a.shape != (4, 4):
        msg = f"a tile affine must be 4x4, got shape {a.shape}"
        raise ParameterError(msg)
    if not np.all(np.isfinite(a)):
        msg = f"a tile affine must be finite, got {a.tolist()}"
        raise ParameterError(msg)
    if not np.allclose(a[3], [0, 0, 0, 1]):
        msg = f"the last row of a tile affine must be (0, 0, 0, 1), got {a[3].tolist()}"
        raise ParameterError(msg)
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        msg = f"a tile affine must be invertible, got {a.tolist()}"
        raise ParameterError(msg)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Tile:
    """One field of view.

    Parameters
    ----------
    source : PixelSource
        Lazy pixels of shape ``(c, z, y, x)``; only requested regions are read.
    affine : array_like of shape (4, 4)
        Placement: maps voxel indices (z, y, x) to the world micrometres of
        the voxels' centres (as NGFF and BigDataViewer do).
    name : str
        A human name (usually the file name).
    index : int
        Position of the tile in its tileset.
    channels : tuple of str
        Channel names, one per source channel (default ``"ch0"``, ...).
    metadata : mapping
        Anything else the reader knew (file path, series, grid position, ...).

    Notes
    -----
    Voxel ``i`` is centred at ``affine @ i`` and covers the index interval
    ``[i - 1/2, i + 1/2)``: a tile of shape ``n`` spans the world box
    ``[affine @ -1/2, affine @ (n - 1/2))``. Pixel offsets are derived from
    the affine, never stored.
    """

    source: PixelSource
    affine: NDArray[np.float64]
    name: str = ""
    index: int = 0
    channels: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, PixelSource):
            msg = f"tile source must provide shape, dtype and read(); got {type(self.source)}"
            raise ParameterTypeError(msg)
        object.__setattr__(self, "affine", parse_affine(self.affine))
        n = self.source.shape[0]
        channels = tuple(self.channels) or tuple(f"ch{i}" for i in range(n))
        if len(channels) != n:
            msg = f"tile {self.name!r} has {n} channels but {len(channels)} channel names"
            raise ParameterError(msg)
        object.__setattr__(self, "channels", channels)

    @classmethod
    def from_array(
        cls,
        array: ArrayLike,
        offset: ArrayLike = (0.0, 0.0, 0.0),
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        **kwargs: Any,
    ) -> Tile:
        """Make a tile from an in-memory (or any sliceable) array.

        Parameters
        ----------
        array : array_like
            ``(y, x)``, ``(z, y, x)`` or ``(c, z, y, x)``.
        offset : array_like of 3 floats
            World position (z, y, x) of the centre of voxel 0, in micrometres.
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres.
        **kwargs
            Other `Tile` fields (name, index, channels, metadata).
        """
        return cls(ArraySource(array), affine_from_offset(voxel_size, offset), **kwargs)

    # -- geometry ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x); 2D tiles have z = 1."""
        s = self.source.shape
        return (s[1], s[2], s[3])

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self.source.shape[0]

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return self.source.dtype

    @property
    def voxel_size(self) -> NDArray[np.float64]:
        """Voxel size (z, y, x) in micrometres (the column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def offset(self) -> NDArray[np.float64]:
        """World position (z, y, x) of the centre of voxel (0, 0, 0), in micrometres."""
        return self.affine[:3, 3].copy()

    @property
    def voxel_offset(self) -> NDArray[np.float64]:
        """Offset in voxels (derived; may be fractional)."""
        return self.offset / self.voxel_size

    @property
    def is_translation(self) -> bool:
        """Whether the placement is axis-aligned (scale + translation only)."""
        return is_translation(self.affine)

    @property
    def box(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World bounding box ``(lo, hi)`` in micrometres (half-open)."""
        return box_of(self.affine, self.shape)

    def with_affine(self, affine: ArrayLike) -> Tile:
        """Copy of this tile with another placement."""
        return dataclasses.replace(self, affine=parse_affine(affine))

    def downscale(self, factors: Any, method: str = "mean") -> Tile:
        """Read this tile at lower resolution (region by region, never whole).

        Parameters
        ----------
        factors : int or sequence of 3 ints
            Factors (z, y, x).
        method : {"mean", "stride"}
            Block mean, or every ``f``-th voxel (reads only the planes it keeps).

        Returns
        -------
        Tile
            Voxel size times ``factors``; shape ``ceil(n / f)``. Voxel centres
            follow the method: a mean of ``f`` voxels sits at the mean of their
            centres (``(f - 1) / 2`` old voxels after the first one), a stride
            keeps the centre of the voxel it keeps.
        """
        from tilefuse.source import DownscaledSource

        fz, fy, fx = (int(v) for v in np.broadcast_to(np.asarray(factors), (3,)))
        f = (fz, fy, fx)
        a = np.array(self.affine)
        if method == "mean":  # new voxel 0 = mean of the centres of old voxels 0 .. f - 1
            a[:3, 3] = a[:3, :3] @ ((np.array(f, dtype=float) - 1) / 2) + a[:3, 3]
        a[:3, :3] = a[:3, :3] * np.array(f, dtype=float)  # scale the voxel axes
        return dataclasses.replace(
            self,
            source=DownscaledSource(self.source, f, method),
            affine=a,  # type: ignore[arg-type]
        )

    def select_channels(self, indices: Sequence[int]) -> Tile:
        """A copy with only the channels ``indices``, in that order (read lazily)."""
        from tilefuse.source import ChannelSubset

        idx = [int(i) for i in indices]
        return dataclasses.replace(
            self,
            source=ChannelSubset(self.source, idx),
            channels=tuple(self.channels[i] for i in idx),
        )

    def with_offset(self, offset: ArrayLike) -> Tile:
        """Copy of this tile translated to ``offset`` (z, y, x) micrometres."""
        a = np.array(self.affine)
        a[:3, 3] = np.asarray(offset, dtype=float)
        return self.with_affine(a)

    # -- pixels -----------------------------------------------------------------
    def read(self, region: Any = None, *, channel: int | None = None) -> NDArray[Any]:
        """Read pixels of a region without loading the rest of the tile.

        Parameters
        ----------
        region : tuple of 3 slices or (start, stop) pairs, optional
            Voxel region (z, y, x); the whole tile when omitted.
        channel : int, optional
            Read one channel. When omitted a single-channel tile returns
            ``(z, y, x)`` and a multi-channel tile ``(c, z, y, x)``.

        Returns
        -------
        ndarray
        """
        data = self.source.read(normalize_region(region, self.shape))
        if channel is not None:
            return data[channel]
        return data[0] if self.n_channels == 1 else data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        if copy is False:
            msg = "reading a tile always copies; copy=False is not possible"
            raise ParameterError(msg)
        data = self.read()
        return data if dtype is None else data.astype(dtype)

    def __repr__(self) -> str:
        off = ", ".join(f"{v:.6g}" for v in self.offset)
        return (
            f"Tile({self.name!r}, shape={self.shape}, channels={self.n_channels}, "
            f"dtype={self.dtype}, offset_um=({off}))"
        )
