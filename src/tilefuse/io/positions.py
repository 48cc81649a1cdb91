"""Tile positions from tables: offsets arrays, exm ``.npy`` files and CSV files.

Also the ``positions`` input format: a folder of tile files (TIFF, JPEG 2000,
or any format in `tilefuse.io.registry.TILE_FILES`) with a positions file
beside them, or that positions file itself:

- a CSV with columns ``z, y, x`` in micrometres (``z_um, ...`` also accepted)
  or ``z_px, y_px, x_px`` in pixels (times ``voxel_size``); ``z`` may be left
  out for 2D tiles. A ``file`` column (or ``filename``, ``path``, ``image``,
  ``tile``) names each row's tile, relative to the CSV's folder; without it
  the rows are the folder's tile files in natural order;
- an exm (ExSeq Toolbox) ``.npy``: row 0 the tile size in pixels (x, y, z),
  then one offset (x, y, z) in micrometres per tile, in natural file order.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import (
    EmptyTilesetError,
    MissingTileError,
    ParameterError,
    TileConfigError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.tile import Tile

__all__ = [
    "PositionsTable",
    "file_tiles",
    "offsets_from",
    "open_positions",
    "parse_offsets",
    "read_exm_offsets",
    "read_offsets_csv",
    "read_positions_csv",
    "sniff_positions",
]

logger = logging.getLogger(__name__)

_FILE_COLUMNS = ("file", "filename", "file_name", "path", "image", "tile")
_POSITION_SUFFIXES = (".csv", ".npy")


def parse_offsets(offsets: ArrayLike, n: int) -> NDArray[np.float64]:
    """Offsets as an (n, 3) float array; (n, 2) (y, x) pairs get z = 0.

    Raises
    ------
    ValueError
        If the shape is not (n, 3) or (n, 2), or a value is not finite.
    """
    offs = np.asarray(offsets, dtype=float)
    if offs.ndim == 2 and offs.shape == (n, 2):
        offs = np.column_stack([np.zeros(n), offs])
    if offs.shape != (n, 3):
        msg = f"offsets must have shape ({n}, 3) (z, y, x) for {n} tiles, got {offs.shape}"
        raise ParameterError(msg)
    if not np.all(np.isfinite(offs)):
        msg = "offsets must be finite"
        raise ParameterError(msg)
    return offs


def offsets_from(offsets: Any, n: int) -> NDArray[np.float64]:
    """Offsets (micrometres) given as an array, or as an exm ``.npy`` / CSV file."""
    if isinstance(offsets, (str, os.PathLike)):
        p = Path(offsets)
        return read_exm_offsets(p, n)[1] if p.suffix == ".npy" else read_offsets_csv(p, n)
    return parse_offsets(offsets, n)


def file_tiles(
    files: Sequence[str | os.PathLike[str]],
    offsets: NDArray[np.float64],
    voxel_size: ArrayLike,
    make_source: Callable[[Any], Any],
    skip_missing: bool,
) -> list[Tile]:
    """One tile per file at ``offsets`` (micrometres); absent files skipped (logged) when asked."""
    from tilefuse.geometry import affine_from_offset
    from tilefuse.tile import Tile

    tiles: list[Tile] = []
    for f, o in zip(files, offsets, strict=True):
        try:
            src = make_source(f)
        except MissingTileError:
            if not skip_missing:
                raise
            logger.warning("skipping missing tile %s", f)
            continue
        tiles.append(
            Tile(
                src,
                affine_from_offset(voxel_size, o),
                name=Path(f).name,
                index=len(tiles),
                channels=tuple(getattr(src, "channel_names", ()) or ()),
                metadata={"path": str(f)},
            )
        )
    return tiles


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


class PositionsTable:
    """A parsed positions CSV.

    Attributes
    ----------
    path : Path
        The CSV.
    files : list of Path or None
        Each row's tile file (resolved against the CSV's folder), when the
        table has a file column.
    values : ndarray (n, 3)
        Positions (z, y, x), in ``unit``.
    unit : {"um", "px"}
        Micrometres, or pixels (multiply by the voxel size).
    """

    def __init__(self, path: Path, files: list[Path] | None, values: NDArray[Any], unit: str):
        self.path, self.files, self.values, self.unit = path, files, values, unit

    def offsets_um(self, voxel_size: ArrayLike) -> NDArray[np.float64]:
        """Positions in micrometres (pixels times ``voxel_size`` (z, y, x))."""
        vs = np.asarray(voxel_size, dtype=float) if self.unit == "px" else 1.0
        return np.asarray(self.values * vs, dtype=float)


def _position_columns(header: Sequence[str]) -> tuple[str | None, dict[str, str], str] | None:
    """(file column, axis -> column, unit) of a header, or None without y and x columns."""
    cols = {h.strip().lower(): h for h in header if h}
    file_col = next((cols[c] for c in _FILE_COLUMNS if c in cols), None)
    for unit, suffixes in (("um", ("_um", "")), ("px", ("_px", "_pixels", "_pixel"))):
        found = {}
        for a in "zyx":
            for suf in suffixes:
                if a + suf in cols:
                    found[a] = cols[a + suf]
                    break
        if "y" in found and "x" in found:
            return file_col, found, unit
    return None


def read_positions_csv(path: str | os.PathLike[str]) -> PositionsTable:
    """Read a positions CSV (see the module docstring for its columns).

    Raises
    ------
    TileConfigError
        If there are no y, x columns, no rows, or a value is not a finite number.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        msg = f"{path}: not a readable CSV ({e})"
        raise TileConfigError(msg) from e
    found = _position_columns(header)
    if found is None:
        msg = (
            f"{path}: needs columns y, x (and z) in micrometres, or y_px, x_px (and z_px) "
            f"in pixels, optionally a file column; has {header}"
        )
        raise TileConfigError(msg)
    if not rows:
        msg = f"{path}: no position rows"
        raise TileConfigError(msg)
    file_col, axes, unit = found
    values = np.zeros((len(rows), 3))
    for i, r in enumerate(rows):
        for k, a in enumerate("zyx"):
            if a not in axes:
                continue
            try:
                values[i, k] = float(r[axes[a]])
            except (TypeError, ValueError) as e:
                msg = f"{path}: row {i + 2}: {axes[a]}={r[axes[a]]!r} is not a number"
                raise TileConfigError(msg) from e
    if not np.all(np.isfinite(values)):
        msg = f"{path}: positions must be finite"
        raise TileConfigError(msg)
    files = None
    if file_col is not None:
        files = []
        for i, r in enumerate(rows):
            name = (r[file_col] or "").strip()
            if not name:
                msg = f"{path}: row {i + 2} has an empty {file_col!r}"
                raise TileConfigError(msg)
            p = Path(name)
            files.append(p if p.is_absolute() else path.parent / p)
    return PositionsTable(path, files, values, unit)


def _tile_files(folder: Path) -> list[Path]:
    from tifffile import natural_sorted

    from tilefuse.io.registry import TILE_FILES

    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TILE_FILES]
    return [Path(p) for p in natural_sorted([str(p) for p in found])]


def _positions_file(folder: Path) -> Path:
    cands = sorted(p for p in folder.iterdir() if p.suffix.lower() in _POSITION_SUFFIXES)
    if len(cands) != 1:
        what = "no" if not cands else f"{len(cands)} ({', '.join(p.name for p in cands)})"
        msg = (
            f"{folder}: {what} positions files (.csv or exm .npy) beside the tiles; "
            "pass positions= (--positions) to name one"
        )
        raise TileConfigError(msg)
    return cands[0]


def sniff_positions(path: Path) -> bool:
    """Whether ``path`` is a positions CSV/.npy, or a folder of tile files with one."""
    from tilefuse.io.registry import TILE_FILES

    if path.is_dir():
        entries = list(path.iterdir())
        return any(p.suffix.lower() in TILE_FILES for p in entries) and any(
            p.suffix.lower() in _POSITION_SUFFIXES for p in entries
        )
    if not path.is_file():
        return False
    if path.suffix.lower() == ".npy":
        return any(p.suffix.lower() in TILE_FILES for p in path.parent.iterdir())
    if path.suffix.lower() != ".csv":
        return False
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), [])
    return _position_columns(header) is not None


def open_positions(
    path: Path,
    *,
    positions: str | os.PathLike[str] | None = None,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    skip_missing: bool = False,
    components: str = "z",
) -> list[Tile]:
    """Tiles of a folder of tile files placed by a positions file (the ``positions`` format).

    Parameters
    ----------
    path : Path
        A folder of tile files, or the positions file (.csv or exm .npy).
    positions : path, optional
        The positions file, when the folder has none or several.
    voxel_size : array_like of 3 floats
        Voxel size (z, y, x) in micrometres (also converts ``*_px`` columns).
    skip_missing : bool
        Drop tiles whose file is absent (logged) instead of raising.
    components : {"z", "channels"}
        For JPEG 2000 tiles: whether image components are z planes (exm) or channels.

    Raises
    ------
    TileConfigError
        If the positions file is malformed or its rows do not match the tiles.
    MissingTileError
        If a tile file is absent and ``skip_missing`` is false.
    """
    from tilefuse.io.registry import tile_file_source

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    pos_file = (
        Path(positions)
        if positions is not None
        else (_positions_file(folder) if path.is_dir() else path)
    )
    vs = np.asarray(voxel_size, dtype=float)
    if pos_file.suffix.lower() == ".npy":
        files: list[Path] = _tile_files(folder)
        offsets = read_exm_offsets(pos_file, len(files))[1]
    else:
        table = read_positions_csv(pos_file)
        files = table.files if table.files is not None else _tile_files(folder)
        if len(files) != len(table.values):
            msg = f"{pos_file}: {len(table.values)} position rows for {len(files)} tile files"
            raise TileConfigError(msg)
        offsets = table.offsets_um(vs)
    if not files:
        msg = f"{folder}: no tile files (.tif, .jp2, ...) to place"
        raise UnsupportedFormatError(msg)

    def make(f: Path) -> Any:
        return tile_file_source(f, components=components)

    tiles = file_tiles(files, offsets, vs, make, skip_missing)
    if not tiles:
        msg = f"{pos_file}: none of the listed tiles exist"
        raise EmptyTilesetError(msg)
    return tiles
