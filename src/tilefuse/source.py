"""Lazy pixel sources: the one way tilefuse reads pixels.

A source has a 4D shape ``(c, z, y, x)``, a dtype and ``read(region)`` that
returns only the requested ``(z, y, x)`` region, for all channels. Sources are
picklable (by path for files) so that they travel to dask workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ArraySource", "PixelSource", "full_region", "normalize_region"]

Region = tuple[slice, slice, slice]


@runtime_checkable
class PixelSource(Protocol):
    """What a tile needs from its pixels."""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        ...

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        ...

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a ``(z, y, x)`` region of step-1 slices."""
        ...


def full_region(shape: tuple[int, ...]) -> Region:
    """Region covering a whole ``(z, y, x)`` shape."""
    z, y, x = shape[-3:]
    return (slice(0, z), slice(0, y), slice(0, x))


def normalize_region(region: Any, shape: tuple[int, int, int]) -> Region:
    """Turn ``None``, a tuple of slices or of ``(start, stop)`` pairs into clipped slices.

    Raises
    ------
    ValueError
        If the region does not have 3 entries or uses a step other than 1.
    """
    if region is None:
        return full_region(shape)
    region = tuple(region)
    if len(region) != 3:
        msg = f"region must have 3 entries (z, y, x), got {len(region)}"
        raise ValueError(msg)
    out = []
    for r, n in zip(region, shape, strict=True):
        s = r if isinstance(r, slice) else slice(*r)
        start, stop, step = s.indices(n)
        if step != 1:
            msg = f"region slices must have step 1, got {s}"
            raise ValueError(msg)
        out.append(slice(start, max(start, stop)))
    return (out[0], out[1], out[2])


class ArraySource:
    """A pixel source over any sliceable array (numpy, zarr, dask, memmap).

    Parameters
    ----------
    array : array_like
        2D ``(y, x)``, 3D ``(z, y, x)`` or 4D ``(c, z, y, x)`` array. It is not
        copied; regions are sliced from it on demand.
    """

    def __init__(self, array: Any) -> None:
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            array = np.asarray(array)
        if array.ndim not in (2, 3, 4):
            msg = (
                f"tile arrays must be 2D (y, x), 3D (z, y, x) or 4D (c, z, y, x); got {array.ndim}D"
            )
            raise ValueError(msg)
        self._array = array
        self._lead = 4 - array.ndim

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        s = (1,) * self._lead + tuple(int(n) for n in self._array.shape)
        return (s[0], s[1], s[2], s[3])

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return np.dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        """Dimensionality of the wrapped array (2, 3 or 4)."""
        return int(self._array.ndim)

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a region."""
        if self._lead == 2:
            data = np.asarray(self._array[region[1:]])
            if region[0].stop - region[0].start < 1:
                data = data[:0]
            return data[None, None]
        if self._lead == 1:
            return np.asarray(self._array[region])[None]
        return np.asarray(self._array[(slice(None), *region)])

    def __repr__(self) -> str:
        return f"ArraySource(shape={self.shape}, dtype={self.dtype})"
