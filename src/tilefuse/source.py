"""Lazy pixel sources: the one way tilefuse reads pixels.

A source has a 4D shape ``(c, z, y, x)``, a dtype and ``read(region)`` that
returns only the requested ``(z, y, x)`` region, for all channels. Sources are
picklable (by path for files) so that they travel to dask workers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "ArraySource",
    "ChannelSubset",
    "FileHandleMixin",
    "DownscaledSource",
    "PixelSource",
    "full_region",
    "normalize_region",
]

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


class DownscaledSource:
    """A source read at lower resolution, region by region, never whole.

    ``method="stride"`` keeps every ``f``-th voxel and reads only the planes
    (z) it keeps; ``method="mean"`` averages ``f``-blocks (integer-exact,
    rounded half up) from just the region it needs. The output shape is
    ``ceil(n / f)`` per axis.
    """

    def __init__(self, source: Any, factors: tuple[int, int, int], method: str = "mean") -> None:
        if method not in ("mean", "stride"):
            msg = f"downscale method must be 'mean' or 'stride', got {method!r}"
            raise ValueError(msg)
        if len(factors) != 3 or min(factors) < 1:
            msg = f"downscale factors must be 3 integers >= 1, got {factors}"
            raise ValueError(msg)
        self.source, self.factors, self.method = source, tuple(int(f) for f in factors), method

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        c, *sp = self.source.shape
        z, y, x = (-(-n // f) for n, f in zip(sp, self.factors, strict=True))
        return (c, z, y, x)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype (unchanged)."""
        return np.dtype(self.source.dtype)

    def read(self, region: Region) -> NDArray[Any]:
        """Read a region of the downscaled tile."""
        from tilefuse.pyramid import downsample

        full = self.source.shape[1:]
        fz, fy, fx = self.factors
        if self.method == "stride":
            ys = slice(region[1].start * fy, min(region[1].stop * fy, full[1]))
            xs = slice(region[2].start * fx, min(region[2].stop * fx, full[2]))
            planes = [
                self.source.read((slice(z * fz, z * fz + 1), ys, xs))[:, :, ::fy, ::fx]
                for z in range(region[0].start, region[0].stop)
            ]
            return np.concatenate(planes, axis=1) if planes else np.empty((self.shape[0], 0, 0, 0))
        src = tuple(
            slice(r.start * f, min(r.stop * f, n))
            for r, f, n in zip(region, self.factors, full, strict=True)
        )
        return downsample(self.source.read(src), self.factors, "mean")


class ChannelSubset:
    """Some channels of a source, in a chosen order (reads all, keeps those)."""

    def __init__(self, source: Any, channels: list[int]) -> None:
        n = source.shape[0]
        if not channels or any(not 0 <= c < n for c in channels):
            msg = f"channel indices must be in [0, {n}); got {channels}"
            raise IndexError(msg)
        self.source, self.channels = source, list(channels)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        _, z, y, x = self.source.shape
        return (len(self.channels), z, y, x)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return np.dtype(self.source.dtype)

    def read(self, region: Region) -> NDArray[Any]:
        """Read a region of the selected channels."""
        return self.source.read(region)[self.channels]


class FileHandleMixin:
    """Lifecycle of a source that keeps one reopenable file handle.

    Subclasses call `_init_handle()` in ``__init__`` and get the open handle
    from `_handle()` inside ``with self._lock`` (file libraries such as h5py
    are not thread-safe). The handle is dropped when pickling (the source
    travels to dask workers by path) and reopened on the next read.
    """

    _lock: threading.Lock
    _file: Any

    def _init_handle(self) -> None:
        self._lock, self._file = threading.Lock(), None

    def _open_file(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _handle(self) -> Any:
        """The open file (call with the lock held)."""
        if self._file is None:
            self._file = self._open_file()
        return self._file

    def close(self) -> None:
        """Close the file (it reopens on the next read)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_file")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_handle()
