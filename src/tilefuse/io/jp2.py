"""JPEG 2000 tiles (via imagecodecs: no system libraries), and exm-style offset files.

A JPEG 2000 image is 2D with one or more components. The exm (ExSeq
Toolbox) layout stores a 3D tile as one 2D image whose components are the z
planes; tilefuse reads it as ``(z, y, x)`` with ``components="z"`` (default)
and writes it back the same way (lossless). With ``components="channels"``
the components are channels (RGB files, multi-channel tiles), z = 1.

JPEG 2000 cannot decode a region cheaply, so a tile is decoded whole on its
first read and kept in a small LRU cache shared by all JP2 sources
(`CACHE_TILES` tiles), which bounds memory during fusion.
"""

from __future__ import annotations

import csv
import logging
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import MissingTileError, TileConfigError, UnsupportedFormatError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["CACHE_TILES", "Jp2Source", "read_exm_offsets", "read_offsets_csv", "write_jp2"]

logger = logging.getLogger(__name__)

#: decoded tiles kept in memory across all JP2 sources
CACHE_TILES = 4
_cache: OrderedDict[tuple[str, float], NDArray[Any]] = OrderedDict()
_cache_lock = threading.Lock()

Components = Literal["z", "channels"]


def _siz(path: Path, head: bytes) -> tuple[int, int, int, int, bool]:
    """(height, width, components, bits, signed) from the codestream's SIZ marker."""
    at = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ
    if at < 0:
        msg = f"{path}: not a JPEG 2000 file (no SOC/SIZ marker in the codestream)"
        raise UnsupportedFormatError(msg)
    p = at + 4
    try:
        (_lsiz, _rsiz, xsiz, ysiz, xo, yo, _xt, _yt, _xto, _yto, csiz) = struct.unpack(
            ">HHIIIIIIIIH", head[p : p + 38]
        )
        ssiz = head[p + 38]
    except (struct.error, IndexError) as e:
        msg = f"{path}: truncated JPEG 2000 SIZ marker"
        raise UnsupportedFormatError(msg) from e
    return ysiz - yo, xsiz - xo, csiz, (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def _dtype(bits: int, signed: bool) -> np.dtype[Any]:
    size = 8 if bits <= 8 else 16 if bits <= 16 else 32
    return np.dtype(f"{'i' if signed else 'u'}{size // 8}")


class Jp2Source:
    """Lazy pixel source over one JPEG 2000 file (``.jp2`` or raw ``.j2k`` codestream).

    Parameters
    ----------
    path : str or PathLike
        The file.
    components : {"z", "channels"}
        What the image components are: z planes (exm layout, default) or channels.

    Raises
    ------
    MissingTileError
        If the file does not exist.
    UnsupportedFormatError
        If it is not JPEG 2000.
    """

    def __init__(self, path: str | os.PathLike[str], components: Components = "z") -> None:
        self.path = Path(path)
        if components not in ("z", "channels"):
            msg = f"components must be 'z' or 'channels', got {components!r}"
            raise ValueError(msg)
        self.components = components
        if not self.path.is_file():
            msg = f"tile file not found: {self.path}"
            raise MissingTileError(msg)
        with self.path.open("rb") as f:
            head = f.read(1 << 16)
        h, w, n, bits, signed = _siz(self.path, head)
        self._dtype = _dtype(bits, signed)
        self._shape = (1, n, h, w) if components == "z" else (n, 1, h, w)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype (from the codestream's bit depth)."""
        return self._dtype

    def _decoded(self) -> NDArray[Any]:
        import imagecodecs

        key = (str(self.path), self.path.stat().st_mtime)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        try:
            data = imagecodecs.jpeg2k_decode(self.path.read_bytes())
        except Exception as e:  # imagecodecs raises its own error types
            msg = f"{self.path}: cannot decode JPEG 2000 ({e})"
            raise UnsupportedFormatError(msg) from e
        data = data.reshape(data.shape[0], data.shape[1], -1)  # (y, x, components)
        arr = (
            np.moveaxis(data, -1, 0)[:, None]
            if self.components == "channels"
            else np.moveaxis(data, -1, 0)[None]
        )
        arr = np.ascontiguousarray(arr.astype(self._dtype, copy=False))
        with _cache_lock:
            _cache[key] = arr
            while len(_cache) > CACHE_TILES:
                _cache.popitem(last=False)
        return arr

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a region (the tile is decoded once, then cached)."""
        return self._decoded()[(slice(None), *region)].copy()

    def __repr__(self) -> str:
        return f"Jp2Source({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def write_jp2(
    path: str | os.PathLike[str], data: NDArray[Any], *, components: Components = "z"
) -> Path:
    """Write a tile losslessly as JPEG 2000 (z planes or channels as components).

    Parameters
    ----------
    path : str or PathLike
        Output ``.jp2`` file.
    data : ndarray
        ``(y, x)``, ``(z, y, x)`` (z planes become components) or, with
        ``components="channels"``, ``(c, y, x)``. Integer dtypes up to 16 bits.

    Returns
    -------
    Path
    """
    import imagecodecs

    data = np.asarray(data)
    if data.dtype.kind not in "ui" or data.dtype.itemsize > 2:
        msg = f"JPEG 2000 tiles must be 8- or 16-bit integers, got {data.dtype}"
        raise ValueError(msg)
    img = data if data.ndim == 2 else np.ascontiguousarray(np.moveaxis(data, 0, -1))
    buf = imagecodecs.jpeg2k_encode(img, level=0, reversible=True, codecformat="jp2", mct=False)
    path = Path(path)
    path.write_bytes(buf)
    return path


def read_exm_offsets(
    path: str | os.PathLike[str], n_tiles: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Read an exm ``.npy`` offsets file.

    Row 0 is the original tile size in pixels (x, y, z); each further row is
    one tile's offset (x, y, z) in micrometres.

    Returns
    -------
    (size_zyx, offsets_zyx)
        Tile size (z, y, x) in pixels and offsets (n, 3) (z, y, x) in micrometres.

    Raises
    ------
    TileConfigError
        If the array is not (n + 1, 3), or ``n_tiles`` is given and differs from n.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        msg = f"{path}: not a numpy .npy offsets file ({e})"
        raise TileConfigError(msg) from e
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] < 2:
        msg = (
            f"{path}: expected rows (x, y, z): the tile size, then one offset per tile; "
            f"got shape {arr.shape}"
        )
        raise TileConfigError(msg)
    if n_tiles is not None and arr.shape[0] - 1 != n_tiles:
        msg = f"{path}: {arr.shape[0] - 1} offset rows for {n_tiles} tiles"
        raise TileConfigError(msg)
    return arr[0, ::-1].astype(np.int64), arr[1:, ::-1].astype(np.float64)


def read_offsets_csv(
    path: str | os.PathLike[str], n_tiles: int | None = None
) -> NDArray[np.float64]:
    """Read tile offsets (micrometres) from a CSV with columns named z, y, x (``_um`` optional).

    Raises
    ------
    TileConfigError
        If the columns are missing, a value is not a number, or the row count
        differs from ``n_tiles``.
    """
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        msg = f"{path}: no offset rows"
        raise TileConfigError(msg)
    cols = {k.strip().lower().removesuffix("_um"): k for k in rows[0] if k}
    if not {"z", "y", "x"} <= cols.keys():
        msg = f"{path}: needs columns z, y, x (micrometres); has {list(rows[0])}"
        raise TileConfigError(msg)
    try:
        offs = np.array([[float(r[cols[a]]) for a in "zyx"] for r in rows])
    except (TypeError, ValueError) as e:
        msg = f"{path}: offsets must be numbers ({e})"
        raise TileConfigError(msg) from e
    if n_tiles is not None and len(offs) != n_tiles:
        msg = f"{path}: {len(offs)} offset rows for {n_tiles} tiles"
        raise TileConfigError(msg)
    return offs
