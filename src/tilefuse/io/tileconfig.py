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

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tilefuse.errors import TileConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

__all__ = ["TileConfigEntry", "TileConfiguration", "read_tileconfig", "write_tileconfig"]

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
