"""BigDataViewer HDF5 tiles, read lazily with h5py.

Layout rules follow ``shared/formats/BDV-BIGSTITCHER.md`` section 2:

- ``/sNN`` groups (``s%02d``) hold ``resolutions`` (levels, 3) and
  ``subdivisions`` (levels, 3), both stored **XYZ** and returned here as
  (z, y, x); ``/tNNNNN/sNN/L/cells`` are (Z, Y, X) datasets;
- the cell (chunk) grid of a level is the dataset's HDF5 chunk shape, or
  ``subdivisions`` for a contiguous dataset (as BigDataViewer does);
- the *logical* dtype of a setup is the ``dataType`` string attribute of
  ``/sNN`` when present (bdv-core >= 10.4.6); without it the file is in the
  legacy layout: an int16 dataset holding the bit pattern of uint16 data,
  read back here as uint16 with the same bits (stored ``-30070`` is ``35466``);
- ``cells`` reached through HDF5 external links (partitioned exports) are
  followed; libhdf5 resolves them next to the master file.

Nothing is read until asked for: `BdvFile` scans only group names and the
small per-setup tables, `BdvSource` reads only the requested region of each
setup's dataset.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tilefuse.errors import (
    IncompatibleTilesError,
    MissingTileError,
    ParameterError,
    SelectionError,
    UnsupportedFormatError,
)
from tilefuse.source import Lifecycle, Source, normalize_region

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["BdvFile", "BdvLevel", "BdvSource", "SetupsSource"]

#: the N5 DataType names bdv-core accepts in the ``dataType`` attribute
BDV_DATA_TYPES = (
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
)
_SETUP_RE = re.compile(r"s(\d{2,})")
_TIMEPOINT_RE = re.compile(r"t(\d{5,})")


class BdvLevel(NamedTuple):
    """One resolution level of a setup; every vector is (z, y, x).

    Attributes
    ----------
    factors : tuple of 3 floats
        Subsampling factors relative to level 0 (``resolutions``, reversed).
    shape : tuple of 3 ints
        Shape of the level's ``cells`` dataset.
    chunks : tuple of 3 ints
        Cell grid: the dataset's HDF5 chunks, else ``subdivisions`` reversed.
    """

    factors: tuple[float, float, float]
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]


class _Setup(NamedTuple):
    """What ``/sNN`` says about a setup (XYZ tables already reversed to ZYX)."""

    factors: list[tuple[float, float, float]]
    subdivisions: list[tuple[int, int, int]]
    data_type: np.dtype[Any] | None  # from the dataType attribute; None: legacy layout


def _zyx(row: Any, kind: type) -> tuple[Any, Any, Any]:
    x, y, z = (kind(v) for v in row)
    return (z, y, x)


def _cells_path(timepoint: int, setup: int, level: int) -> str:
    return f"t{timepoint:05d}/s{setup:02d}/{level}/cells"


class BdvFile(Lifecycle):
    """Lazy reader of one BigDataViewer HDF5 file (``.h5``).

    The file is checked when the object is made (it must be HDF5 with the BDV
    layout); the h5py handle is opened on the first read and kept until
    `close`. Thread-safe (reads are serialised by a lock: h5py is not
    thread-safe); picklable by path (the handle is reopened lazily).

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` file (not the XML).

    Raises
    ------
    MissingTileError
        If the file does not exist.
    UnsupportedFormatError
        If it is not an HDF5 file, or not in the BigDataViewer layout.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            msg = f"BigDataViewer HDF5 file not found: {self.path}"
            raise MissingTileError(msg)
        if not self.path.is_file():
            msg = f"{self.path} is not a file; expected a BigDataViewer HDF5 (.h5) file"
            raise UnsupportedFormatError(msg)
        self._setup_info: dict[int, _Setup] = {}
        self._levels: dict[tuple[int, int], list[BdvLevel]] = {}
        self._dtypes: dict[int, np.dtype[Any]] = {}
        with self._locked() as f:
            try:
                self._setups, self._timepoints = self._scan(f)
            finally:
                self._close_locked()  # lazy: nothing stays open until the first read

    # -- metadata -----------------------------------------------------------------

    @property
    def setups(self) -> list[int]:
        """Setup ids present as ``/sNN`` groups, sorted."""
        return list(self._setups)

    @property
    def timepoints(self) -> list[int]:
        """Timepoint ids present as ``/tNNNNN`` groups, sorted."""
        return list(self._timepoints)

    def levels(self, setup: int, timepoint: int | None = None) -> list[BdvLevel]:
        """Resolution levels of a setup: ``(factors, shape, chunks)``, all (z, y, x).

        Parameters
        ----------
        setup : int
            Setup id.
        timepoint : int, optional
            Timepoint whose datasets give the shapes (default: the first one
            holding this setup).

        Raises
        ------
        MissingTileError
            If the setup is absent, or a level's ``cells`` dataset is missing.
        """
        info = self._info(setup)
        with self._locked() as f:
            tp = self._default_timepoint(setup) if timepoint is None else int(timepoint)
            key = (setup, tp)
            if key not in self._levels:
                out = []
                for lvl, (fac, sub) in enumerate(zip(info.factors, info.subdivisions, strict=True)):
                    ds = self._dataset(f, tp, setup, lvl)
                    shape = (int(ds.shape[0]), int(ds.shape[1]), int(ds.shape[2]))
                    chunks = tuple(int(c) for c in ds.chunks) if ds.chunks else sub
                    out.append(BdvLevel(fac, shape, chunks))  # type: ignore[arg-type]
                self._levels[key] = out
            return list(self._levels[key])

    def dtype(self, setup: int) -> np.dtype[Any]:
        """Logical pixel dtype of a setup.

        The ``dataType`` attribute of ``/sNN`` when present. Without it
        (legacy layout) int16 and uint16 datasets are uint16; any other stored
        type (pybdv writes uint8 and float32 without the attribute) is
        returned as stored, which is what its writer meant.
        """
        info = self._info(setup)
        if info.data_type is not None:
            return info.data_type
        with self._src_lock:
            if setup not in self._dtypes:
                stored = self._stored_dtype(setup)
                legacy = stored is None or (stored.kind in "iu" and stored.itemsize == 2)
                self._dtypes[setup] = np.dtype(np.uint16) if legacy else stored.newbyteorder("=")  # type: ignore[union-attr]
            return self._dtypes[setup]

    def has_view(self, timepoint: int, setup: int, level: int = 0) -> bool:
        """Whether the ``cells`` dataset of a view exists (and its link resolves)."""
        with self._locked() as f:
            try:
                f[_cells_path(timepoint, setup, level)]
            except KeyError:
                return False
            return True

    # -- pixels -------------------------------------------------------------------

    def read(
        self,
        timepoint: int,
        setup: int,
        level: int = 0,
        region: Region | Sequence[slice | tuple[int, int]] | None = None,
    ) -> NDArray[Any]:
        """Read a (z, y, x) region of one view, in the setup's logical dtype.

        Parameters
        ----------
        timepoint, setup : int
            View ids (as in the XML).
        level : int
            Resolution level (0 = full resolution).
        region : tuple of 3 slices, optional
            Step-1 slices (z, y, x) of the level; clipped to its shape.
            Default: the whole level.

        Returns
        -------
        ndarray
            ``(z', y', x')``; uint16 stored as int16 keeps its bit pattern.

        Raises
        ------
        MissingTileError
            If the setup, the level or the view's ``cells`` dataset is missing.
        """
        dt = self.dtype(setup)
        with self._locked() as f:
            ds = self._dataset(f, timepoint, setup, level)
            sel = normalize_region(region, ds.shape)
            out = np.empty([s.stop - s.start for s in sel], dtype=dt)
            _read_into(ds, sel, out)
        return out

    def _read_into(
        self, timepoint: int, setup: int, level: int, region: Region, out: NDArray[Any]
    ) -> None:
        """Read a clipped region straight into ``out`` (C-contiguous, logical dtype)."""
        with self._locked() as f:
            _read_into(self._dataset(f, timepoint, setup, level), region, out)

    def __repr__(self) -> str:
        return f"BdvFile({str(self.path)!r}, setups={self._setups}, timepoints={self._timepoints})"

    # -- internals (callers hold the lock) ----------------------------------------

    def _open(self) -> Any:
        """Open the file with h5py (the handle `Lifecycle` keeps)."""
        import h5py

        try:
            try:
                return h5py.File(self.path, "r", locking="best-effort")
            except ValueError:  # libhdf5 too old for best-effort locking
                return h5py.File(self.path, "r")
        except OSError as e:
            msg = f"cannot open {self.path} as HDF5 ({e}); expected a BigDataViewer HDF5 file (.h5)"
            if self.path.suffix.lower() == ".xml":
                msg += ": pass the .h5 file named in the XML's <hdf5> element"
            raise UnsupportedFormatError(msg) from e

    def _scan(self, f: Any) -> tuple[list[int], list[int]]:
        """Find setups and timepoints, read each setup's tables; check the layout."""
        import h5py

        setups, timepoints = [], []
        for name in f:
            m = _SETUP_RE.fullmatch(name)
            if m and f"s{int(m[1]):02d}" == name:
                setups.append(int(m[1]))
            m = _TIMEPOINT_RE.fullmatch(name)
            if m and f"t{int(m[1]):05d}" == name:
                timepoints.append(int(m[1]))
        if not setups or not timepoints:
            msg = (
                f"{self.path} is HDF5 but not in the BigDataViewer layout: expected /sNN "
                f"setup groups (s00, s01, ...) and /tNNNNN timepoint groups; found "
                f"{sorted(f)[:10]}"
            )
            raise UnsupportedFormatError(msg)
        for s in sorted(setups):
            g = f[f"s{s:02d}"]
            if not isinstance(g, h5py.Group):
                msg = f"{self.path}: /s{s:02d} is not a group; expected a BigDataViewer setup"
                raise UnsupportedFormatError(msg)
            tables = {}
            for key in ("resolutions", "subdivisions"):
                ds = g.get(key)
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != 3:
                    found = "missing" if ds is None else f"{type(ds).__name__} {ds.shape}"
                    msg = (
                        f"{self.path}: /s{s:02d}/{key} is {found}; expected a (levels, 3) "
                        "dataset (BigDataViewer layout)"
                    )
                    raise UnsupportedFormatError(msg)
                tables[key] = np.asarray(ds[()])
            if len(tables["resolutions"]) != len(tables["subdivisions"]) or not len(
                tables["resolutions"]
            ):
                msg = (
                    f"{self.path}: /s{s:02d}/resolutions has {len(tables['resolutions'])} "
                    f"rows and subdivisions {len(tables['subdivisions'])}; expected one "
                    "row per level in each"
                )
                raise UnsupportedFormatError(msg)
            self._setup_info[s] = _Setup(
                [_zyx(r, float) for r in tables["resolutions"]],
                [_zyx(r, int) for r in tables["subdivisions"]],
                self._data_type_attr(g, s),
            )
        return sorted(setups), sorted(timepoints)

    def _data_type_attr(self, group: Any, setup: int) -> np.dtype[Any] | None:
        """The ``dataType`` attribute of ``/sNN`` as a dtype (None when absent)."""
        if "dataType" not in group.attrs:
            return None
        value = group.attrs["dataType"]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        if isinstance(value, bytes | np.bytes_):
            value = bytes(value).decode("ascii", errors="replace")
        name = value.strip("\x00 \t\r\n").lower() if isinstance(value, str) else None
        if name not in BDV_DATA_TYPES:
            msg = (
                f"{self.path}: attribute dataType={value!r} of /s{setup:02d} is not a "
                f"BigDataViewer data type; expected one of {', '.join(BDV_DATA_TYPES)}"
            )
            raise UnsupportedFormatError(msg)
        return np.dtype(name)

    def _info(self, setup: int) -> _Setup:
        try:
            return self._setup_info[int(setup)]
        except KeyError:
            msg = (
                f"{self.path}: no setup {setup} (group /s{int(setup):02d}); "
                f"setups present: {self._setups}"
            )
            raise MissingTileError(msg) from None

    def _default_timepoint(self, setup: int) -> int:
        f = self._handle()
        for tp in self._timepoints:
            if f"t{tp:05d}/s{setup:02d}" in f:
                return tp
        msg = f"{self.path}: setup {setup} has no data at any timepoint (no /tNNNNN/s{setup:02d})"
        raise MissingTileError(msg)

    def _stored_dtype(self, setup: int) -> np.dtype[Any] | None:
        f = self._handle()
        for tp in self._timepoints:
            try:
                return np.dtype(f[_cells_path(tp, setup, 0)].dtype)
            except KeyError:
                continue
        return None

    def _dataset(self, f: Any, timepoint: int, setup: int, level: int) -> Any:
        import h5py

        info = self._info(setup)
        if not 0 <= level < len(info.factors):
            msg = (
                f"{self.path}: setup {setup} has {len(info.factors)} level(s) "
                f"(0..{len(info.factors) - 1}); got level {level}"
            )
            raise SelectionError(msg)
        path = _cells_path(timepoint, setup, level)
        try:
            ds = f[path]
        except KeyError:
            link = None
            with contextlib.suppress(KeyError, ValueError):
                link = f.get(path, getlink=True)
            hint = (
                f" (external link to {link.filename!r} does not resolve: partition file missing?)"
                if isinstance(link, h5py.ExternalLink)
                else ""
            )
            msg = (
                f"{self.path}: no dataset /{path} (timepoint {timepoint}, setup {setup}, "
                f"level {level}){hint}"
            )
            raise MissingTileError(msg) from None
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
            msg = f"{self.path}: /{path} is not a 3D dataset; expected (z, y, x) cells"
            raise UnsupportedFormatError(msg)
        return ds


def _read_into(ds: Any, region: Region, out: NDArray[Any]) -> None:
    """Read ``ds[region]`` into ``out`` (its logical dtype), without a second copy.

    Same-size integers of the other signedness (legacy int16 holding uint16)
    keep their bit pattern; any other difference is an HDF5 value conversion
    (the way BigDataViewer reads with its memory type).
    """
    if out.size == 0:
        return
    stored = np.dtype(ds.dtype)
    dest = out
    if (
        stored.kind in "iu"
        and out.dtype.kind in "iu"
        and stored.kind != out.dtype.kind
        and stored.itemsize == out.dtype.itemsize
    ):
        dest = out.view(stored.newbyteorder("="))
    ds.read_direct(dest, source_sel=region)


def check_same_shape(
    where: object,
    setups: list[int],
    shapes: dict[int, Any],
    dtypes: dict[int, Any],
    timepoint: int,
    level: int,
) -> None:
    """Raise `IncompatibleTilesError` unless the setups (channels of one tile) agree."""
    if len(set(shapes.values())) > 1 or len(set(dtypes.values())) > 1:
        detail = ", ".join(f"setup {s}: {shapes[s]} {dtypes[s]}" for s in setups)
        msg = (
            f"{where}: setups used as channels must share shape and dtype "
            f"(timepoint {timepoint}, level {level}); got {detail}"
        )
        raise IncompatibleTilesError(msg)


def setups_as_channels(
    where: object, container: Any, setups: list[int], timepoint: int, level: int
) -> tuple[tuple[int, int, int], np.dtype[Any]]:
    """The common (z, y, x) shape and dtype of ``setups`` read as channels of one tile.

    ``container`` is a BigDataViewer container (HDF5 or N5) with ``levels(setup,
    timepoint)`` and ``dtype(setup)``.

    Raises
    ------
    SelectionError
        If a setup has no such level.
    IncompatibleTilesError
        If the setups differ in shape or dtype.
    """
    shapes, dtypes = {}, {}
    for s in setups:
        lv = container.levels(s, timepoint)
        if not 0 <= level < len(lv):
            msg = f"{where}: setup {s} has {len(lv)} level(s); got level {level}"
            raise SelectionError(msg)
        shapes[s], dtypes[s] = tuple(lv[level].shape), container.dtype(s)
    check_same_shape(where, setups, shapes, dtypes, timepoint, level)
    z, y, x = shapes[setups[0]]
    return (int(z), int(y), int(x)), np.dtype(dtypes[setups[0]])


class SetupsSource(Source):
    """Setups of one BigDataViewer container (HDF5 or N5) read as the channels of one tile.

    Subclasses open the container (``container``, with ``levels(setup,
    timepoint)``, ``dtype(setup)`` and ``close()``), name it (`path`) and read
    one setup's region (`_read_setup`); the setup list and its checks, the
    shape, the subsampling factors and the channel stacking are here.
    """

    container: Any
    setups: list[int]
    timepoint: int
    level: int

    def _init_setups(self, setups: int | Sequence[int], timepoint: int, level: int) -> None:
        ids = [setups] if isinstance(setups, int | np.integer) else list(setups)
        self.setups = [int(s) for s in ids]
        if not self.setups:
            msg = f"{self.path}: {type(self).__name__} needs at least one setup"
            raise ParameterError(msg)
        self.timepoint, self.level = int(timepoint), int(level)
        shape, self._dtype = setups_as_channels(
            self.path, self.container, self.setups, self.timepoint, self.level
        )
        self._shape = (len(self.setups), *shape)  # type: ignore[assignment]

    @property
    def path(self) -> Any:
        """Where the container is."""
        raise NotImplementedError

    @property
    def factors(self) -> tuple[float, float, float]:
        """Subsampling factors (z, y, x) of this level relative to level 0."""
        return self.container.levels(self.setups[0], self.timepoint)[self.level].factors  # type: ignore[no-any-return]

    def _read_setup(self, setup: int, region: Region, out: NDArray[Any]) -> None:
        raise NotImplementedError

    def _read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels of a ``(z, y, x)`` region."""
        out = np.empty((len(self.setups), *[s.stop - s.start for s in region]), dtype=self._dtype)
        for c, s in enumerate(self.setups):
            self._read_setup(s, region, out[c])
        return out

    def close(self) -> None:
        """Close the container's handles (they reopen on the next read)."""
        self.container.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, setups={self.setups}, "
            f"timepoint={self.timepoint}, level={self.level}, shape={self.shape}, "
            f"dtype={self.dtype})"
        )


class BdvSource(SetupsSource):
    """Lazy pixel source over setups of one BigDataViewer HDF5 file.

    The given setups become the channels: shape ``(c, z, y, x)`` at one
    timepoint and level. Reads touch only the requested region of each
    setup's dataset. Thread-safe; picklable by path.

    Parameters
    ----------
    path : str, PathLike or BdvFile
        The ``.h5`` file, or an open `BdvFile` to share between sources.
    setups : int or sequence of int
        Setup ids, one per channel, in channel order. They must share shape
        and logical dtype at this timepoint and level.
    timepoint : int
        Timepoint id.
    level : int
        Resolution level (0 = full resolution).

    Raises
    ------
    MissingTileError
        If the file, a setup or one of the views is missing.
    UnsupportedFormatError
        If the file is not BigDataViewer HDF5.
    IncompatibleTilesError
        If the setups differ in shape or dtype.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | BdvFile,
        setups: int | Sequence[int],
        timepoint: int = 0,
        level: int = 0,
    ) -> None:
        # sources of one project share one BdvFile (one scan, one handle)
        self.file = path if isinstance(path, BdvFile) else BdvFile(path)
        self.container = self.file
        self._init_setups(setups, timepoint, level)

    @property
    def path(self) -> Path:
        """The HDF5 file."""
        return self.file.path

    def _read_setup(self, setup: int, region: Region, out: NDArray[Any]) -> None:
        self.file._read_into(self.timepoint, setup, self.level, region, out)
