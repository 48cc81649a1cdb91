"""Lazy pixel sources: the one way tilefuse reads pixels.

A source has a 4D shape ``(c, z, y, x)``, a dtype and ``read(region)`` that
returns only the requested ``(z, y, x)`` region, for all channels. Every
source in tilefuse derives from `Source`, which writes the shared parts once:

- ``shape``, ``dtype``, ``n_channels`` and ``channel_names`` (a subclass sets
  ``_shape`` and ``_dtype`` in ``__init__``, or overrides the properties);
- ``read(region)`` normalises the region (numpy bounds, clipped to the shape;
  anything but 3 step-1 slices is a `RegionError`) and calls the subclass's
  ``_read``;
- one lifecycle for a file handle (`Lifecycle`): opened lazily by ``_handle()``,
  closed by ``close()`` or a ``with`` block and reopened on the next read,
  dropped when pickled (sources travel to dask workers by path) and after a
  fork, optionally capped per class (``max_open``: the least recently used
  handles are closed first).

Sources that wrap another source (`DownscaledSource`, `ChannelSubset`, ...)
derive from `WrappedSource`: closing them closes what they wrap.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from tilefuse.errors import ParameterError, RegionError, SelectionError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

    from numpy.typing import NDArray

__all__ = [
    "ArraySource",
    "ChannelSubset",
    "DownscaledSource",
    "Lifecycle",
    "PixelSource",
    "Source",
    "WrappedSource",
    "full_region",
    "normalize_region",
]

Region = tuple[slice, slice, slice]


@runtime_checkable
class PixelSource(Protocol):
    """What a tile needs from its pixels (every `Source` provides it)."""

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


def normalize_region(region: Any, shape: tuple[int, ...], owner: object = None) -> Region:
    """Turn ``None``, a tuple of slices or of ``(start, stop)`` pairs into clipped slices.

    Bounds follow numpy slicing: ``None`` is the start or end of the axis,
    negative values count from the end, and a region reaching past the
    shape is clipped to it (an empty slice when it lies wholly outside).

    Parameters
    ----------
    region : None or sequence of 3 slices or (start, stop) pairs
        The (z, y, x) region.
    shape : tuple of ints
        The shape; its last 3 entries are (z, y, x).
    owner : object, optional
        Named in error messages (a source, a file).

    Raises
    ------
    RegionError
        If the region does not have 3 entries, an entry is neither a slice
        nor a pair of integers, or a step is not 1.
    """
    zyx = tuple(int(n) for n in shape[-3:])
    if region is None:
        return full_region(zyx)
    where = f"{owner}: " if owner is not None else ""
    try:
        items = tuple(region)
    except TypeError:
        items = ()
    if len(items) != 3:
        msg = f"{where}a region has 3 entries (z, y, x); got {region!r}"
        raise RegionError(msg)
    out = []
    for r, n in zip(items, zyx, strict=True):
        try:
            s = r if isinstance(r, slice) else slice(*r)
            start, stop, step = s.indices(n)
        except (TypeError, ValueError) as e:
            msg = f"{where}region entries are slices or (start, stop) pairs; got {r!r} ({e})"
            raise RegionError(msg) from e
        if step != 1:
            msg = f"{where}region slices must have step 1, got {s}"
            raise RegionError(msg)
        out.append(slice(start, max(start, stop)))
    return (out[0], out[1], out[2])


# -- the handle lifecycle ----------------------------------------------------------------

_lru_lock = threading.Lock()
#: per class with a ``max_open`` cap: the sources holding an open handle, oldest first
_lru: dict[type, OrderedDict[int, weakref.ref[Lifecycle]]] = {}


class Lifecycle:
    """One reopenable handle: the file-lifecycle every source shares.

    A subclass implements ``_open()`` (return the handle: an open file, a
    decoded array, ...) and, when the handle needs more than ``.close()``,
    ``_release(handle)``. It then gets:

    - ``_handle()``: the open handle, opened now if needed (after `close`, in
      a new process after pickling, or after a fork);
    - ``_locked()``: a context manager that holds the source's lock and yields
      the handle, for libraries that are not thread-safe (h5py, nd2);
    - `close` and ``with source: ...`` (closing is not final: the next read
      reopens); ``is_open``;
    - pickling that drops the handle and the lock (a source travels to dask
      workers by path and reopens there);
    - ``max_open``: when a class sets it, at most that many of its instances
      keep a handle open; opening one more closes the least recently used
      (a busy one is skipped). Jp2Source uses it to bound decoded tiles.
    """

    #: most instances of this class with an open handle at once (None: no limit)
    max_open: ClassVar[int | None] = None

    _src_lock: threading.RLock
    _src_handle: Any
    _src_pid: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Make the object with its lock and no handle (``__init__`` gets the arguments)."""
        self = super().__new__(cls)
        # set here, not in __init__, so subclasses and unpickled copies always have them
        self._src_lock = threading.RLock()
        self._src_handle = None
        self._src_pid = os.getpid()
        return self

    # -- for subclasses ------------------------------------------------------------
    def _open(self) -> Any:
        """Open and return the handle (called with the lock held). Default: no handle."""
        return None

    def _release(self, handle: Any) -> None:
        """Close a handle made by `_open` (default: its ``close()``, when it has one)."""
        close = getattr(handle, "close", None)
        if close is not None:
            close()

    def _handle(self) -> Any:
        """The open handle, opened now if needed."""
        with self._src_lock:
            if self._src_handle is not None and self._src_pid == os.getpid():
                handle = self._src_handle
                opened = False
            else:
                self._src_handle = None  # a handle from before a fork is not ours to close
                handle = self._open()
                self._src_handle, self._src_pid = handle, os.getpid()
                opened = True
        if type(self).max_open is not None and handle is not None:
            self._touch(opened)
        return handle

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        """Hold this source's lock and yield the open handle."""
        with self._src_lock:
            yield self._handle()

    # -- public ----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether a handle is open now (reads reopen it after `close`)."""
        return self._src_handle is not None and self._src_pid == os.getpid()

    def close(self) -> None:
        """Release the handle (the next read reopens it)."""
        with self._src_lock:
            self._close_locked()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_src_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown, half-made objects
            if self._src_handle is not None and self._src_pid == os.getpid():
                self._release(self._src_handle)
            self._src_handle = None

    # -- internals -------------------------------------------------------------------
    def _close_locked(self) -> None:
        handle, self._src_handle = self._src_handle, None
        if handle is not None and self._src_pid == os.getpid():
            self._release(handle)

    def _touch(self, opened: bool) -> None:
        """Mark this source most recently used; close the oldest beyond ``max_open``."""
        cls, limit = type(self), int(type(self).max_open or 0)
        victims: list[Lifecycle] = []
        with _lru_lock:
            table = _lru.setdefault(cls, OrderedDict())
            key = id(self)
            if key in table and table[key]() is self:
                table.move_to_end(key)
            elif opened or self.is_open:
                table[key] = weakref.ref(self)  # (replaces a dead entry whose id was reused)
                table.move_to_end(key)
            for k in list(table):
                if len(table) <= max(limit, 1):
                    break
                other = table[k]()
                if other is self:
                    continue
                del table[k]
                if other is not None:
                    victims.append(other)
        for v in victims:  # never block on a busy source: it is closed on a later pass
            if v._src_lock.acquire(blocking=False):
                try:
                    v._close_locked()
                finally:
                    v._src_lock.release()


class Source(Lifecycle):
    """Base of every pixel source: shape, dtype, channels, region reads, lifecycle.

    A subclass sets ``self._shape = (c, z, y, x)`` and ``self._dtype`` in
    ``__init__`` and implements ``_read(region)``, which gets a normalised region
    (3 step-1 slices within the shape) and returns ``(c, z', y', x')`` pixels in
    ``dtype``. File sources add ``_open`` (see `Lifecycle`). ``channel_names``
    is set when the file names its channels.

    `tilefuse.testing.SourceTests` checks a source against this contract.
    """

    _shape: tuple[int, int, int, int]
    _dtype: np.dtype[Any]
    #: channel names from the file (empty when it has none: tiles then use ch0, ch1, ...)
    channel_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return self._dtype

    @property
    def n_channels(self) -> int:
        """Number of channels (``shape[0]``)."""
        return int(self.shape[0])

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a ``(z, y, x)`` region.

        The region is 3 step-1 slices (or ``(start, stop)`` pairs); bounds
        follow numpy slicing (clipped to the shape), so ``read(full_region(s.shape))``
        reads everything.

        Raises
        ------
        RegionError
            If the region is not 3 step-1 slices.
        """
        return self._read(normalize_region(region, self.shape, self))

    def _read(self, region: Region) -> NDArray[Any]:
        """Read a normalised region (3 step-1 slices within the shape); subclasses implement it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        path = getattr(self, "path", None)
        where = f"{str(path)!r}, " if path is not None else ""
        return f"{type(self).__name__}({where}shape={self.shape}, dtype={self.dtype})"


class WrappedSource(Source):
    """A source computed from another one (``self.source``); closing it closes that one."""

    source: Any

    @property
    def channel_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Channel names of the wrapped source."""
        return tuple(getattr(self.source, "channel_names", ()))

    def close(self) -> None:
        """Close the wrapped source."""
        super().close()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, shape={self.shape}, dtype={self.dtype})"


class ArraySource(Source):
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
            raise ParameterError(msg)
        self._array = array
        self._lead = 4 - array.ndim
        s = (1,) * self._lead + tuple(int(n) for n in array.shape)
        self._shape = (s[0], s[1], s[2], s[3])
        self._dtype = np.dtype(array.dtype)

    @property
    def ndim(self) -> int:
        """Dimensionality of the wrapped array (2, 3 or 4)."""
        return int(self._array.ndim)

    def _read(self, region: Region) -> NDArray[Any]:
        if self._lead == 2:
            data = np.asarray(self._array[region[1:]])
            if region[0].stop - region[0].start < 1:
                data = data[:0]
            return data[None, None]
        if self._lead == 1:
            return np.asarray(self._array[region])[None]
        return np.asarray(self._array[(slice(None), *region)])


class DownscaledSource(WrappedSource):
    """A source read at lower resolution, region by region, never whole.

    ``method="stride"`` keeps every ``f``-th voxel and reads only the planes
    (z) it keeps; ``method="mean"`` averages ``f``-blocks (integer-exact,
    rounded half up) from just the region it needs. The output shape is
    ``ceil(n / f)`` per axis.
    """

    def __init__(self, source: Any, factors: tuple[int, int, int], method: str = "mean") -> None:
        if method not in ("mean", "stride"):
            msg = f"downscale method must be 'mean' or 'stride', got {method!r}"
            raise ParameterError(msg)
        if len(factors) != 3 or min(factors) < 1:
            msg = f"downscale factors must be 3 integers >= 1, got {factors}"
            raise ParameterError(msg)
        self.source, self.factors, self.method = source, tuple(int(f) for f in factors), method
        c, *sp = source.shape
        z, y, x = (-(-n // f) for n, f in zip(sp, self.factors, strict=True))
        self._shape = (c, z, y, x)
        self._dtype = np.dtype(source.dtype)

    def _read(self, region: Region) -> NDArray[Any]:
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
            if planes:
                return np.concatenate(planes, axis=1)
            ny, nx = (-(-(s.stop - s.start) // f) for s, f in ((ys, fy), (xs, fx)))
            return np.empty((self.shape[0], 0, ny, nx), dtype=self.dtype)
        src = tuple(
            slice(r.start * f, min(r.stop * f, n))
            for r, f, n in zip(region, self.factors, full, strict=True)
        )
        return downsample(self.source.read(src), self.factors, "mean")


class ChannelSubset(WrappedSource):
    """Some channels of a source, in a chosen order (reads all, keeps those)."""

    def __init__(self, source: Any, channels: list[int]) -> None:
        n = source.shape[0]
        if not channels or any(not 0 <= c < n for c in channels):
            msg = f"channel indices must be in [0, {n}); got {channels}"
            raise SelectionError(msg)
        self.source, self.channels = source, list(channels)
        _, z, y, x = source.shape
        self._shape = (len(self.channels), z, y, x)
        self._dtype = np.dtype(source.dtype)

    @property
    def channel_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Names of the kept channels (empty when the wrapped source has none)."""
        names = tuple(getattr(self.source, "channel_names", ()))
        return tuple(names[c] for c in self.channels) if names else ()

    def _read(self, region: Region) -> NDArray[Any]:
        return self.source.read(region)[self.channels]
