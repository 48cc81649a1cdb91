"""TIFF tiles, read lazily with tifffile.

Uncompressed contiguous files are memory-mapped; others are read through
tifffile's zarr store, which decodes only the pages and strips a region needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import tifffile

from tilefuse.errors import CorruptFileError, MissingTileError, UnsupportedFormatError
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Iterator

    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["TiffSource", "write_tiff"]

logger = logging.getLogger(__name__)

# tifffile axis letters that we map onto tilefuse's (c, z, y, x)
_CHANNEL_AXES = "CS"
_Z_AXES = "ZQI"


class TiffSource(Source):
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
        try:
            with _tifffile_complaints() as complaints, tifffile.TiffFile(self.path) as tf:
                s = tf.series[self.series]
                axes, shape, dtype = s.axes, tuple(s.shape), np.dtype(s.dtype)
                # uncompressed contiguous data can be read with a short-lived memmap
                offset = s.dataoffset
                self._raw = (
                    (int(offset), np.dtype(tf.byteorder + dtype.char))
                    if offset is not None
                    else None
                )
                end = _data_end(s)
        except (tifffile.TiffFileError, ValueError, IndexError) as e:
            msg = f"cannot read {self.path} as a TIFF (series {self.series}): {e}"
            raise UnsupportedFormatError(msg) from e
        size = self.path.stat().st_size
        if complaints:
            # tifffile only logs a truncated or damaged file and returns fewer planes
            msg = f"{self.path}: truncated or corrupt TIFF: {complaints[0]}"
            raise CorruptFileError(msg)
        if end > size:
            msg = (
                f"{self.path}: truncated TIFF: its header places image data up to byte "
                f"{end}, the file has {size} bytes"
            )
            raise CorruptFileError(msg)
        self._axes = axes
        self._dtype = dtype
        self._file_shape = shape
        self._perm, self._shape = _axes_to_czyx(axes, shape, self.path)

    @property
    def axes(self) -> str:
        """The file's own axes string (tifffile letters)."""
        return self._axes

    def _open(self) -> _TiffHandle | None:
        if self._raw is not None:
            return None  # memory-mapped per read: nothing stays open
        import zarr

        tf = tifffile.TiffFile(self.path)
        try:
            array = zarr.open_array(tf.series[self.series].aszarr(), mode="r")
        except Exception:
            tf.close()
            raise
        return _TiffHandle(tf, array)

    def _pixels(self) -> Any:
        if self._raw is not None:
            # mapped per read and dropped after: resident memory does not
            # accumulate the pages of every tile ever read
            offset, dt = self._raw
            return np.memmap(self.path, dtype=dt, mode="r", offset=offset, shape=self._file_shape)
        return self._handle().array

    def _read(self, region: Region) -> NDArray[Any]:
        arr = self._pixels()
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


class _TiffHandle(NamedTuple):
    """An open TIFF and the zarr view of its series."""

    file: tifffile.TiffFile
    array: Any

    def close(self) -> None:
        self.file.close()


class _Collect(logging.Handler):
    """Collects the warnings and errors tifffile logs while a file is parsed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_complaints() -> Iterator[list[str]]:
    """What tifffile logs (at WARNING or above) inside the block: these are errors here."""
    log = logging.getLogger("tifffile")
    handler = _Collect()
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)


def _data_end(series: Any) -> int:
    """The last byte offset (exclusive) of the series' image data, as its header claims."""
    end = 0
    for page in series.pages:
        if page is None:
            continue
        offsets = getattr(page, "dataoffsets", None) or ()
        counts = getattr(page, "databytecounts", None) or ()
        for o, n in zip(offsets, counts, strict=False):
            if o and n:
                end = max(end, int(o) + int(n))
    offset = series.dataoffset
    if offset is not None:  # contiguous: the whole series after its first byte
        end = max(end, int(offset) + int(series.size) * np.dtype(series.dtype).itemsize)
    return end


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
