"""JPEG 2000 tiles (via imagecodecs: no system libraries), and exm-style offset files.

A JPEG 2000 image is 2D with one or more components. The exm (ExSeq
Toolbox) layout stores a 3D tile as one 2D image whose components are the z
planes; tilefuse reads it as ``(z, y, x)`` with ``components="z"`` (default)
and writes it back the same way (lossless). With ``components="channels"``
the components are channels (RGB files, multi-channel tiles), z = 1.

JPEG 2000 cannot decode a region cheaply, so a tile is decoded whole on its
first read and kept as the source's open handle; at most
``Jp2Source.max_open`` (`CACHE_TILES`) JP2 tiles stay decoded at once (the
least recently read is dropped first), which bounds memory during fusion.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import MissingTileError, ParameterError, UnsupportedFormatError
from tilefuse.io.positions import read_exm_offsets, read_offsets_csv
from tilefuse.source import Source

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["CACHE_TILES", "Jp2Source", "read_exm_offsets", "read_offsets_csv", "write_jp2"]

logger = logging.getLogger(__name__)

#: decoded tiles kept in memory across all JP2 sources (the default of ``Jp2Source.max_open``)
CACHE_TILES = 4

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


class Jp2Source(Source):
    """Lazy pixel source over one JPEG 2000 file (``.jp2`` or raw ``.j2k`` codestream).

    The tile is decoded whole on its first read and kept until `close` or
    until more than ``max_open`` JP2 tiles are decoded (least recently read
    first).

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

    #: decoded JP2 tiles kept in memory at once, across all JP2 sources
    max_open = CACHE_TILES

    def __init__(self, path: str | os.PathLike[str], components: Components = "z") -> None:
        self.path = Path(path)
        if components not in ("z", "channels"):
            msg = f"components must be 'z' or 'channels', got {components!r}"
            raise ParameterError(msg)
        self.components = components
        if not self.path.is_file():
            msg = f"tile file not found: {self.path}"
            raise MissingTileError(msg)
        with self.path.open("rb") as f:
            head = f.read(1 << 16)
        h, w, n, bits, signed = _siz(self.path, head)
        self._dtype = _dtype(bits, signed)
        self._shape = (1, n, h, w) if components == "z" else (n, 1, h, w)

    def _open(self) -> NDArray[Any]:
        """Decode the whole tile (the handle is the decoded array)."""
        import imagecodecs

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
        if arr.shape != self._shape:
            msg = f"{self.path}: decoded shape {arr.shape} differs from the header's {self._shape}"
            raise UnsupportedFormatError(msg)
        arr.setflags(write=False)
        return arr

    def _release(self, handle: Any) -> None:
        """Nothing to close: dropping the decoded array frees it."""

    def _read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a region (the tile is decoded once, then kept)."""
        return self._handle()[(slice(None), *region)].copy()


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
        raise ParameterError(msg)
    img = data if data.ndim == 2 else np.ascontiguousarray(np.moveaxis(data, 0, -1))
    buf = imagecodecs.jpeg2k_encode(img, level=0, reversible=True, codecformat="jp2", mct=False)
    path = Path(path)
    path.write_bytes(buf)
    return path
