"""OME-Zarr images as tiles: one multiscale image per tile, any resolution level.

Positions come from each image's ``coordinateTransformations``: the chosen
level's ``scale`` is the voxel size and its ``translation`` the centre of its
voxel 0, which is exactly tilefuse's placement (an affine maps voxel centres,
as in NGFF), at any level.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from tilefuse.errors import (
    IncompleteStoreError,
    MissingTileError,
    SelectionError,
    UnsupportedFormatError,
)
from tilefuse.geometry import affine_from_offset
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = ["OmeZarrSource", "check_complete", "find_images", "image_tile", "open_ome_zarr"]

logger = logging.getLogger(__name__)


def _multiscales(group: zarr.Group) -> list[dict[str, Any]] | None:
    attrs: dict[str, Any] = dict(group.attrs)
    ms = attrs.get("ome", {}).get("multiscales") if "ome" in attrs else attrs.get("multiscales")
    return ms if isinstance(ms, list) and ms else None


def find_images(path: str | os.PathLike[str]) -> list[Path]:
    """The multiscale images at ``path``.

    ``path`` itself, or its child groups (natural-sorted), or the ``*.zarr``
    stores in a folder.

    Raises
    ------
    UnsupportedFormatError
        If no multiscale image is found.
    """
    from tifffile import natural_sorted

    path = Path(path)
    if not path.exists():
        msg = f"input not found: {path}"
        raise MissingTileError(msg)
    found: list[Path] = []
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        group = None
    if group is not None:
        if _multiscales(group):
            return [path]
        for name, child in group.groups():
            if name != "labels" and _multiscales(child):
                found.append(path / name)
    elif path.is_dir():
        found = [p for p in path.iterdir() if p.suffix == ".zarr" and p.is_dir()]
        found = [p for p in found if _multiscales(zarr.open_group(str(p), mode="r"))]
    if not found:
        msg = f"{path}: no OME-Zarr multiscale image here or in its groups/folders"
        raise UnsupportedFormatError(msg)
    return [Path(p) for p in natural_sorted([str(p) for p in found])]


def image_tile(
    path: Path,
    level: int = 0,
    timepoint: int = 0,
    index: int = 0,
    *,
    allow_incomplete: bool = False,
) -> Tile:
    """A `Tile` reading one level of one multiscale image lazily.

    Raises
    ------
    IncompleteStoreError
        If the image is an unfinished (interrupted) tilefuse write and
        ``allow_incomplete`` is false; with it, a warning is logged instead.
    """
    from tilefuse.tile import Tile

    group = zarr.open_group(str(path), mode="r")
    ms = _multiscales(group)
    if not ms:
        msg = f"{path}: not an OME-Zarr multiscale image"
        raise UnsupportedFormatError(msg)
    check_complete(group, path, allow_incomplete)
    m = ms[0]
    try:
        axes = [a["name"] if isinstance(a, dict) else a for a in m["axes"]]
        datasets = m["datasets"]
        ds = datasets[level]
    except (KeyError, IndexError, TypeError) as e:
        msg = f"{path}: multiscales has no level {level} or no axes ({e})"
        raise UnsupportedFormatError(msg) from e

    def transform(d: dict[str, Any], kind: str, default: float) -> np.ndarray:
        for t in d.get("coordinateTransformations", []):
            if t.get("type") == kind:
                return np.asarray(t[kind], dtype=float)
        return np.full(len(axes), default)

    scale, trans = transform(ds, "scale", 1.0), transform(ds, "translation", 0.0)
    view = OmeZarrSource(path, ds["path"], axes, timepoint)
    sp = [axes.index(a) if a in axes else None for a in "zyx"]
    vs = np.array([scale[i] if i is not None else 1.0 for i in sp])
    t = np.array([trans[i] if i is not None else 0.0 for i in sp])
    return Tile(
        view,
        affine_from_offset(vs, t),  # NGFF translation = centre of voxel 0 = tilefuse offset
        name=path.name,
        index=index,
        metadata={
            "path": str(path),
            "level": level,
            "timepoint": int(timepoint),
            "timepoints": list(range(view.timepoints)),
        },
    )


def open_ome_zarr(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    level: int = 0,
    timepoint: int = 0,
    allow_incomplete: bool = False,
) -> list[Tile]:
    """Tiles from OME-Zarr images (one multiscale image per tile); see `Tileset.from_ome_zarr`."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    images = [img for p in items for img in find_images(p)]
    return [
        image_tile(p, level, timepoint, i, allow_incomplete=allow_incomplete)
        for i, p in enumerate(images)
    ]


def check_complete(group: zarr.Group, path: Path, allow_incomplete: bool = False) -> None:
    """Refuse (or, when allowed, warn about) a store whose tilefuse write is unfinished."""
    info = dict(group.attrs).get("tilefuse") or {}
    status = info.get("status", "complete") if isinstance(info, dict) else "complete"
    if status == "complete":
        return
    msg = (
        f"{path} is an unfinished tilefuse write (status {status!r}): parts of it may be "
        "empty; resume the command that wrote it, or pass allow_incomplete=True to read it anyway"
    )
    if not allow_incomplete:
        raise IncompleteStoreError(msg)
    logger.warning("%s", msg)


class OmeZarrSource(Source):
    """One array of an OME-Zarr image seen as ``(c, z, y, x)``, read lazily.

    A ``t`` axis is fixed at ``timepoint``; missing ``c``/``z`` axes have size
    1. The zarr array is the handle: opened on the first read, picklable by
    path.

    Parameters
    ----------
    image : Path
        The multiscale image group.
    array_path : str
        The level's ``datasets[i].path`` inside the group.
    axes : list of str
        The image's axis names (``t``, ``c``, ``z``, ``y``, ``x``).
    timepoint : int
        Index on the ``t`` axis, when there is one.

    Raises
    ------
    UnsupportedFormatError
        For an axis other than t, c, z, y, x.
    """

    def __init__(self, image: Path, array_path: str, axes: list[str], timepoint: int = 0) -> None:
        self.path, self.array_path, self.axes = Path(image), str(array_path), list(axes)
        index: list[Any] = []
        for a in self.axes:
            if a == "t":
                index.append(int(timepoint))
            elif a in ("c", "z", "y", "x"):
                index.append(slice(None))
            else:
                msg = f"{self.path}: unsupported axis {a!r} (axes {self.axes})"
                raise UnsupportedFormatError(msg)
        self.index = tuple(index)
        arr = self._handle()
        n_t = int(arr.shape[self.axes.index("t")]) if "t" in self.axes else 1
        if not 0 <= int(timepoint) < n_t:  # a negative index would read from the end
            what = f"{n_t} timepoint(s), 0 to {n_t - 1}" if "t" in self.axes else "no t axis"
            msg = f"{self.path}: no timepoint {timepoint}: the image has {what}"
            raise SelectionError(msg)
        self.timepoints = n_t
        self._order = [
            a for a, i in zip(self.axes, self.index, strict=True) if isinstance(i, slice)
        ]
        sizes = {a: int(arr.shape[self.axes.index(a)]) for a in self._order}
        c, z, y, x = (sizes.get(a, 1) for a in "czyx")
        self._shape = (c, z, y, x)
        self._dtype = np.dtype(arr.dtype)

    def _open(self) -> Any:
        try:
            return zarr.open_group(str(self.path), mode="r")[self.array_path]
        except KeyError as e:
            msg = f"{self.path}: no array {self.array_path!r} (named in its multiscales datasets)"
            raise UnsupportedFormatError(msg) from e

    def _release(self, handle: Any) -> None:
        """Nothing to close: zarr reads each chunk on demand."""

    def _read(self, region: Region) -> NDArray[Any]:
        want = dict(zip("zyx", region, strict=True))
        want["c"] = slice(None)
        sel = list(self.index)
        for k, a in enumerate(self.axes):
            if isinstance(sel[k], slice):
                sel[k] = want[a]
        data = np.asarray(self._handle()[tuple(sel)])
        present = list(self._order)
        for a in "czyx":
            if a not in present:
                data = data[None]
                present.insert(0, a)
        return data.transpose([present.index(a) for a in "czyx"])
