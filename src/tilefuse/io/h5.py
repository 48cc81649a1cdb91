"""Plain HDF5 tiles: one dataset per tile (e.g. CellPose masks), read lazily with h5py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import MissingTileError, UnsupportedFormatError
from tilefuse.source import FileHandleMixin

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["H5Source", "list_datasets"]


def _open(path: Path) -> Any:
    import h5py

    if not path.is_file():
        msg = f"HDF5 file not found: {path}"
        raise MissingTileError(msg)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        msg = f"{path}: not an HDF5 file ({e})"
        raise UnsupportedFormatError(msg) from e


def list_datasets(path: str | os.PathLike[str]) -> list[str]:
    """Names of all datasets of 2 or 3 dimensions in a file, natural-sorted (tile_2 < tile_10).

    Raises
    ------
    UnsupportedFormatError
        If the file holds no such dataset.
    """
    import h5py
    from tifffile import natural_sorted

    path = Path(path)
    names: list[str] = []
    with _open(path) as f:
        f.visititems(
            lambda name, obj: (
                names.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) else None
            )
        )
    if not names:
        msg = f"{path}: no 2D or 3D dataset to use as a tile"
        raise UnsupportedFormatError(msg)
    return list(natural_sorted(names))


class H5Source(FileHandleMixin):
    """Lazy pixel source over one HDF5 dataset ``(y, x)`` or ``(z, y, x)``; picklable by path."""

    def __init__(self, path: str | os.PathLike[str], dataset: str) -> None:
        self.path, self.dataset = Path(path), dataset
        with _open(self.path) as f:
            if dataset not in f:
                msg = f"{self.path}: no dataset {dataset!r}"
                raise UnsupportedFormatError(msg)
            ds = f[dataset]
            if ds.ndim not in (2, 3):
                msg = f"{self.path}/{dataset}: tiles must be 2D or 3D, got shape {ds.shape}"
                raise UnsupportedFormatError(msg)
            shape = (1, *ds.shape) if ds.ndim == 2 else tuple(ds.shape)
            self._shape = (1, int(shape[0]), int(shape[1]), int(shape[2]))
            self._dtype = np.dtype(ds.dtype)
            self._ndim = ds.ndim
        self._init_handle()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return self._dtype

    def read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a region (only the chunks it touches)."""
        with self._lock:  # h5py is not thread-safe
            ds = self._handle()[self.dataset]
            data = ds[region[1:]][None] if self._ndim == 2 else ds[region]
        return np.asarray(data)[None]

    def _open_file(self) -> Any:
        return _open(self.path)

    def __repr__(self) -> str:
        return f"H5Source({str(self.path)!r}, {self.dataset!r}, shape={self.shape})"
