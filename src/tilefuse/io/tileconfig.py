"""Fiji Grid/Collection stitching ``TileConfiguration.txt`` files.

The format (as written by the Fiji "Grid/Collection stitching" plugin)::

    # Define the number of dimensions we are working on
    dim = 3

    # Define the image coordinates
    tile_1.tif; ; (0.0, 0.0, 0.0)
    tile_2.tif; ; (921.6, 0.0, 0.0)

Coordinates are in pixels, in X, Y(, Z) order; the middle field is an
optional series index for multi-series files. ``.registered.txt`` files have
the same format. tilefuse converts to (z, y, x) here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tilefuse.errors import (
    EmptyTilesetError,
    IncompatibleTilesError,
    MissingTileError,
    TileConfigError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

    from tilefuse.tile import Tile

__all__ = [
    "TileConfigEntry",
    "TileConfiguration",
    "find_tileconfig",
    "open_tileconfig",
    "read_tileconfig",
    "write_tileconfig",
]

logger = logging.getLogger(__name__)

#: file names looked for in a folder, in order (the registered one first)
TILECONFIG_NAMES = ("TileConfiguration.registered.txt", "TileConfiguration.txt")

_DIM = re.compile(r"^dim\s*=\s*(\d+)\s*$", re.IGNORECASE)
_LINE = re.compile(r"^(?P<file>[^;]+);(?P<series>[^;]*);\s*\((?P<coords>[^)]*)\)\s*$")


@dataclass(frozen=True)
class TileConfigEntry:
    """One image line: file, optional series, position in pixels (z, y, x)."""

    file: str
    series: int | None
    position_px: tuple[float, float, float]
    line: int


@dataclass(frozen=True)
class TileConfiguration:
    """A parsed TileConfiguration file."""

    path: Path
    dim: int
    entries: tuple[TileConfigEntry, ...]

    def resolve(self, entry: TileConfigEntry) -> Path:
        """Path of an entry's image (relative names are relative to this file)."""
        p = Path(entry.file)
        return p if p.is_absolute() else self.path.parent / p


def read_tileconfig(path: str | os.PathLike[str]) -> TileConfiguration:
    """Parse a TileConfiguration(.registered).txt file.

    Parameters
    ----------
    path : str or PathLike
        The file.

    Returns
    -------
    TileConfiguration

    Raises
    ------
    TileConfigError
        On a malformed line (the message names the file and line number), a
        missing or invalid ``dim``, coordinates whose count differs from
        ``dim``, or a file that lists no image.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        msg = f"{path}: not a text TileConfiguration file ({e})"
        raise TileConfigError(msg) from e
    dim: int | None = None
    entries: list[TileConfigEntry] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _DIM.match(line)
        if m:
            dim = int(m.group(1))
            if dim not in (2, 3):
                msg = f"{path}:{lineno}: dim must be 2 or 3, got {dim}"
                raise TileConfigError(msg)
            continue
        m = _LINE.match(line)
        if not m:
            msg = (
                f"{path}:{lineno}: expected 'file; [series]; (x, y[, z])' or 'dim = N', got {raw!r}"
            )
            raise TileConfigError(msg)
        if dim is None:
            msg = f"{path}:{lineno}: image line before the 'dim = N' line"
            raise TileConfigError(msg)
        try:
            coords = [float(c) for c in m.group("coords").split(",")]
        except ValueError as e:
            msg = f"{path}:{lineno}: coordinates are not numbers: ({m.group('coords')})"
            raise TileConfigError(msg) from e
        if len(coords) != dim:
            msg = f"{path}:{lineno}: dim = {dim} but the line has {len(coords)} coordinates"
            raise TileConfigError(msg)
        if not all(np.isfinite(coords)):
            msg = f"{path}:{lineno}: coordinates must be finite, got {coords}"
            raise TileConfigError(msg)
        series_txt = m.group("series").strip()
        try:
            series = int(series_txt) if series_txt else None
        except ValueError as e:
            msg = f"{path}:{lineno}: series index must be an integer, got {series_txt!r}"
            raise TileConfigError(msg) from e
        x, y = coords[0], coords[1]
        z = coords[2] if dim == 3 else 0.0
        entries.append(TileConfigEntry(m.group("file").strip(), series, (z, y, x), lineno))
    if dim is None:
        msg = f"{path}: no 'dim = N' line; is this a TileConfiguration file?"
        raise TileConfigError(msg)
    if not entries:
        msg = f"{path}: lists no image"
        raise TileConfigError(msg)
    return TileConfiguration(path, dim, tuple(entries))


def find_tileconfig(path: str | os.PathLike[str]) -> Path:
    """The TileConfiguration file at ``path``, or in the folder ``path``.

    In a folder, ``TileConfiguration.registered.txt`` is preferred, then
    ``TileConfiguration.txt``, then the first other ``TileConfiguration*.txt``.

    Raises
    ------
    TileConfigError
        If a folder holds none.
    """
    p = Path(path)
    if not p.is_dir():
        return p
    for name in TILECONFIG_NAMES:
        if (p / name).is_file():
            return p / name
    cands = sorted(p.glob("TileConfiguration*.txt"))
    if not cands:
        msg = f"{p}: no TileConfiguration*.txt in this folder"
        raise TileConfigError(msg)
    return cands[0]


def open_tileconfig(
    path: str | os.PathLike[str],
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    *,
    skip_missing: bool = False,
) -> list[Tile]:
    """Tiles listed in a Fiji ``TileConfiguration(.registered).txt`` (or a folder holding one).

    Positions in the file are pixels (x, y[, z]); they become (z, y, x)
    micrometres with ``voxel_size``. For ``dim = 2`` files, tiles are 2D
    images (z = 1). See `tilefuse.Tileset.from_tileconfig`.

    Raises
    ------
    TileConfigError
        If the file is malformed (the message names the line).
    MissingTileError
        If a listed tile does not exist and ``skip_missing`` is false.
    EmptyTilesetError
        If none of the listed tiles exists.
    """
    from tilefuse.geometry import affine_from_offset
    from tilefuse.io.registry import tile_file_source
    from tilefuse.tile import Tile

    cfg = read_tileconfig(find_tileconfig(path))
    vs = np.asarray(voxel_size, dtype=float)
    tiles: list[Tile] = []
    for e in cfg.entries:
        f = cfg.resolve(e)
        if not f.is_file():
            if skip_missing:
                logger.warning("%s:%d: skipping missing tile %s", cfg.path, e.line, f)
                continue
            msg = f"{cfg.path}:{e.line}: tile {e.file!r} not found at {f}"
            raise MissingTileError(msg)
        # Fiji lists any image it can open; files without a known suffix are tried as TIFF
        src = tile_file_source(f, default="tilefuse.io.tiff:TiffSource", series=e.series or 0)
        if cfg.dim == 2 and src.shape[1] != 1:
            msg = f"{cfg.path}:{e.line}: dim = 2 but {f.name} has {src.shape[1]} planes"
            raise IncompatibleTilesError(msg)
        offset = np.asarray(e.position_px) * vs
        tiles.append(
            Tile(
                src,
                affine_from_offset(vs, offset),
                name=e.file,
                index=len(tiles),
                metadata={"path": str(f), "series": e.series, "line": e.line},
            )
        )
    if not tiles:
        msg = f"{cfg.path}: none of the listed tiles exist"
        raise EmptyTilesetError(msg)
    return tiles


def write_tileconfig(
    path: str | os.PathLike[str],
    files: Sequence[str],
    positions_px: ArrayLike,
    *,
    dim: int = 3,
) -> Path:
    """Write a TileConfiguration file Fiji can read.

    Parameters
    ----------
    path : str or PathLike
        Output file.
    files : sequence of str
        Image file names (relative to the output file's folder, or absolute).
    positions_px : array_like of shape (n, 3)
        Positions (z, y, x) in pixels; written as x, y(, z).
    dim : {2, 3}
        Dimensionality written in the header (z is dropped for 2).

    Returns
    -------
    Path
    """
    pos = np.asarray(positions_px, dtype=float).reshape(len(files), 3)
    lines = [
        "# Define the number of dimensions we are working on",
        f"dim = {dim}",
        "",
        "# Define the image coordinates",
    ]
    for f, (z, y, x) in zip(files, pos, strict=True):
        coords = (x, y, z) if dim == 3 else (x, y)
        lines.append(f"{f}; ; ({', '.join(repr(float(c)) for c in coords)})")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
