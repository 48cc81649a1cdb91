"""Plain HDF5 tiles: one dataset per tile (e.g. CellPose masks), read lazily with h5py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import MissingTileError, UnsupportedFormatError
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = ["H5Source", "list_datasets", "open_hdf5"]


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


class H5Source(Source):
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

    def _read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a region (only the chunks it touches)."""
        with self._locked() as f:  # h5py is not thread-safe
            ds = f[self.dataset]
            data = ds[region[1:]][None] if self._ndim == 2 else ds[region]
        return np.asarray(data)[None]

    def _open(self) -> Any:
        return _open(self.path)

    def __repr__(self) -> str:
        return f"H5Source({str(self.path)!r}, {self.dataset!r}, shape={self.shape})"


def open_hdf5(
    path: str | os.PathLike[str],
    offsets: ArrayLike | str | os.PathLike[str],
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    *,
    datasets: Sequence[str] | None = None,
) -> list[Tile]:
    """Tiles from one HDF5 file holding one dataset per tile; see `Tileset.from_hdf5`."""
    from tilefuse.geometry import affine_from_offset
    from tilefuse.io.positions import offsets_from
    from tilefuse.tile import Tile

    names = list(datasets) if datasets is not None else list_datasets(path)
    offs = offsets_from(offsets, len(names))
    return [
        Tile(
            H5Source(path, n),
            affine_from_offset(voxel_size, o),
            name=n,
            index=i,
            metadata={"path": str(path), "dataset": n},
        )
        for i, (n, o) in enumerate(zip(names, offs, strict=True))
    ]
