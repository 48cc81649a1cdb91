"""TIFF tiles, read lazily with tifffile.

Uncompressed contiguous files are memory-mapped; others are read through
tifffile's zarr store, which decodes only the pages and strips a region needs.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from tilefuse.errors import MissingTileError, UnsupportedFormatError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["TiffSource", "write_tiff"]

logger = logging.getLogger(__name__)

# tifffile axis letters that we map onto tilefuse's (c, z, y, x)
_CHANNEL_AXES = "CS"
_Z_AXES = "ZQI"


class TiffSource:
    """Lazy pixel source over one TIFF file (one series).

    Axes are taken from the TIFF series (``ZYX``, ``CZYX``, ImageJ ``ZCYX``,
    ``YXS`` RGB, ...): a channel axis (``C`` or samples ``S``) becomes tilefuse's
    channel axis, a ``Z``/``Q``/``I`` axis becomes z. Reads of a region touch
    only the planes it covers. Thread-safe; picklable by path.

    Parameters
    ----------
    path : str or PathLike
        The TIFF file.
    series : int
        Series index inside the file.

    Raises
    ------
    MissingTileError
        If the file does not exist.
    UnsupportedFormatError
        If the file is not a TIFF or has axes tilefuse cannot map.
    """

    def __init__(self, path: str | os.PathLike[str], series: int = 0) -> None:
        self.path = Path(path)
        self.series = int(series)
        if not self.path.is_file():
            msg = f"tile file not found: {self.path}"
            raise MissingTileError(msg)
        self._lock = threading.Lock()
        self._handle: tifffile.TiffFile | None = None
        self._array: Any = None
        try:
            with tifffile.TiffFile(self.path) as tf:
                s = tf.series[self.series]
                axes, shape, dtype = s.axes, tuple(s.shape), np.dtype(s.dtype)
                # uncompressed contiguous data can be read with a short-lived memmap
                offset = s.dataoffset
                self._raw = (
                    (int(offset), np.dtype(tf.byteorder + dtype.char))
                    if offset is not None
                    else None
                )
        except (tifffile.TiffFileError, ValueError, IndexError) as e:
            msg = f"cannot read {self.path} as a TIFF (series {self.series}): {e}"
            raise UnsupportedFormatError(msg) from e
        self._axes = axes
        self._dtype = dtype
        self._file_shape = shape
        self._perm, self._shape = _axes_to_czyx(axes, shape, self.path)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return self._dtype

    @property
    def axes(self) -> str:
        """The file's own axes string (tifffile letters)."""
        return self._axes

    def _open(self) -> Any:
        if self._raw is not None:
            # mapped per read and dropped after: resident memory does not
            # accumulate the pages of every tile ever read
            offset, dt = self._raw
            return np.memmap(self.path, dtype=dt, mode="r", offset=offset, shape=self._file_shape)
        with self._lock:
            if self._array is None:
                import zarr

                self._handle = tifffile.TiffFile(self.path)
                store = self._handle.series[self.series].aszarr()
                self._array = zarr.open_array(store, mode="r")
            return self._array

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a ``(z, y, x)`` region."""
        arr = self._open()
        # build the index in file order, then transpose to (c, z, y, x)
        # unmapped file axes have size 1 and are indexed away with 0
        file_index: list[slice | int] = [0] * len(self._axes)
        by_role = {"c": slice(None), "z": region[0], "y": region[1], "x": region[2]}
        for file_ax, role in self._perm.items():
            file_index[file_ax] = by_role[role]
        data = np.array(arr[tuple(file_index)], dtype=self._dtype)
        del arr
        roles = [self._perm[i] for i in sorted(self._perm)]
        for role in "czyx":
            if role not in roles:
                data = data[None]
                roles.insert(0, role)
        return np.ascontiguousarray(data.transpose([roles.index(r) for r in "czyx"]))

    def close(self) -> None:
        """Release the file handle (it reopens on the next read)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self._array = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _handle=None, _array=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    def __repr__(self) -> str:
        return f"TiffSource({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def _axes_to_czyx(
    axes: str, shape: tuple[int, ...], path: Path
) -> tuple[dict[int, str], tuple[int, int, int, int]]:
    """Map a tifffile axes string onto roles c, z, y, x; return roles and the 4D shape."""
    roles: dict[int, str] = {}
    out = {"c": 1, "z": 1, "y": 1, "x": 1}
    for i, (ax, n) in enumerate(zip(axes, shape, strict=True)):
        if ax == "Y":
            role = "y"
        elif ax == "X":
            role = "x"
        elif ax in _CHANNEL_AXES and "c" not in roles.values():
            role = "c"
        elif ax in _Z_AXES and "z" not in roles.values():
            role = "z"
        elif n == 1:
            continue
        else:
            msg = f"{path}: cannot map TIFF axes {axes!r} {shape} onto (c, z, y, x)"
            raise UnsupportedFormatError(msg)
        roles[i] = role
        out[role] = int(n)
    if "y" not in roles.values() or "x" not in roles.values():
        msg = f"{path}: TIFF axes {axes!r} have no Y and X"
        raise UnsupportedFormatError(msg)
    return roles, (out["c"], out["z"], out["y"], out["x"])


def write_tiff(path: str | os.PathLike[str], data: NDArray[Any]) -> Path:
    """Write a ``(z, y, x)`` or ``(c, z, y, x)`` array as an ImageJ-compatible TIFF.

    Parameters
    ----------
    path : str or PathLike
        Output file.
    data : ndarray
        2D, 3D or 4D array (channels first).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    axes = {2: "YX", 3: "ZYX", 4: "CZYX"}[data.ndim]
    if data.ndim == 4:
        data = np.ascontiguousarray(np.moveaxis(data, 0, 1))
        axes = "ZCYX"
    imagej = data.dtype in (np.uint8, np.uint16, np.float32)
    tifffile.imwrite(path, data, imagej=imagej, metadata={"axes": axes} if imagej else None)
    return path
