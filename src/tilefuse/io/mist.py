"""NIST MIST stitching results: ``global-positions-*.txt``.

MIST writes one line per tile::

    file: img_r001_c001.tif; corr: 0.9812; position: (1024, 0); grid: (1, 0);

``position`` is the tile's (x, y) pixel position in the mosaic and ``grid``
its (column, row). MIST stitches 2D images; tilefuse places each tile at
(z, y, x) = (0, y, x) pixels times the voxel size. The images sit in the
folder MIST read them from, which is often not the one it wrote the
positions to: they are looked up in ``image_dir`` when given, else beside the
positions file, else in its parent folder.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tilefuse.errors import EmptyTilesetError, MissingTileError, TileConfigError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from tilefuse.tile import Tile

__all__ = ["MistEntry", "find_mist_positions", "open_mist", "read_mist_positions", "sniff_mist"]

logger = logging.getLogger(__name__)

_LINE = re.compile(
    r"^file:\s*(?P<file>[^;]+?)\s*;\s*corr:\s*(?P<corr>[^;]*?)\s*;\s*"
    r"position:\s*\(\s*(?P<x>[^,]+?)\s*,\s*(?P<y>[^)]+?)\s*\)\s*;\s*"
    r"grid:\s*\(\s*(?P<col>-?\d+)\s*,\s*(?P<row>-?\d+)\s*\)\s*;?\s*$"
)
_GLOB = "global-positions*.txt"


@dataclass(frozen=True)
class MistEntry:
    """One tile of a MIST positions file.

    Attributes
    ----------
    file : str
        Image file name as MIST wrote it.
    corr : float
        MIST's correlation for the tile's placement (NaN when not a number).
    position_px : tuple of 2 floats
        (y, x) position in pixels.
    grid : tuple of 2 ints
        (row, column) in the acquisition grid.
    line : int
        Line number in the file.
    """

    file: str
    corr: float
    position_px: tuple[float, float]
    grid: tuple[int, int]
    line: int


def read_mist_positions(path: str | os.PathLike[str]) -> list[MistEntry]:
    """Parse a MIST ``global-positions-*.txt`` file.

    Raises
    ------
    TileConfigError
        On a line that is not a MIST position line (the message names the
        line), a position that is not a finite number, or no lines at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        msg = f"{path}: not a text MIST positions file ({e})"
        raise TileConfigError(msg) from e
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m:
            msg = (
                f"{path}:{lineno}: expected 'file: NAME; corr: C; position: (X, Y); "
                f"grid: (COL, ROW);', got {raw!r}"
            )
            raise TileConfigError(msg)
        try:
            x, y = float(m["x"]), float(m["y"])
        except ValueError as e:
            msg = f"{path}:{lineno}: position ({m['x']}, {m['y']}) is not two numbers"
            raise TileConfigError(msg) from e
        if not (np.isfinite(x) and np.isfinite(y)):
            msg = f"{path}:{lineno}: position ({x}, {y}) must be finite"
            raise TileConfigError(msg)
        try:
            corr = float(m["corr"])
        except ValueError:
            corr = float("nan")
        out.append(MistEntry(m["file"], corr, (y, x), (int(m["row"]), int(m["col"])), lineno))
    if not out:
        msg = f"{path}: lists no tile"
        raise TileConfigError(msg)
    return out


def find_mist_positions(path: str | os.PathLike[str]) -> Path:
    """The positions file at ``path``, or in the folder ``path`` or one of its subfolders.

    Raises
    ------
    TileConfigError
        If a folder holds none, or several (name one).
    """
    p = Path(path)
    if not p.is_dir():
        return p
    cands = sorted(p.glob(_GLOB)) or sorted(p.glob(f"*/{_GLOB}"))
    if len(cands) != 1:
        what = "no" if not cands else f"{len(cands)}: " + ", ".join(str(c) for c in cands)
        msg = f"{p}: {what} MIST {_GLOB} file(s) here or one folder down; pass the file"
        raise TileConfigError(msg)
    return cands[0]


def sniff_mist(path: Path) -> bool:
    """Whether ``path`` is a MIST positions file, or a folder holding one (or one level down)."""
    if path.is_dir():
        return any(path.glob(_GLOB)) or any(path.glob(f"*/{_GLOB}"))
    if not (path.is_file() and path.suffix.lower() == ".txt"):
        return False
    with path.open("rb") as f:
        head = f.read(4096).decode("utf-8-sig", errors="replace")
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    return bool(_LINE.match(first))


def _image_dir(pos_file: Path, names: list[str], image_dir: Path | None) -> Path:
    if image_dir is not None:
        return image_dir
    for cand in (pos_file.parent, pos_file.parent.parent):
        if any((cand / n).is_file() for n in names):
            return cand
    return pos_file.parent


def open_mist(
    path: Path,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    image_dir: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> list[Tile]:
    """Tiles placed by a MIST ``global-positions-*.txt`` (or a folder holding one).

    Parameters
    ----------
    path : Path
        The positions file, or a folder with one in it or one level down.
    voxel_size : array_like of 3 floats
        Voxel size (z, y, x) in micrometres (default 1: offsets stay pixels).
    image_dir : path, optional
        Folder of the images (default: beside the positions file, else its parent).
    skip_missing : bool
        Drop listed tiles whose file is absent (logged) instead of raising.

    Returns
    -------
    list of Tile
        In the file's order; ``metadata`` holds ``path``, ``grid`` (row, column),
        ``corr`` and ``line``.

    Raises
    ------
    TileConfigError
        If the positions file is malformed.
    MissingTileError
        If a listed image is absent and ``skip_missing`` is false.
    EmptyTilesetError
        If none of the listed images exists.
    """
    from tilefuse.geometry import affine_from_offset
    from tilefuse.io.registry import tile_file_source
    from tilefuse.tile import Tile

    pos_file = find_mist_positions(path)
    entries = read_mist_positions(pos_file)
    folder = _image_dir(
        pos_file, [e.file for e in entries], Path(image_dir) if image_dir is not None else None
    )
    vs = np.asarray(voxel_size, dtype=float)
    tiles: list[Tile] = []
    for e in entries:
        f = folder / e.file
        if not f.is_file():
            if skip_missing:
                logger.warning("%s:%d: skipping missing tile %s", pos_file, e.line, f)
                continue
            msg = f"{pos_file}:{e.line}: tile {e.file!r} not found in {folder}"
            raise MissingTileError(msg)
        offset = np.array([0.0, *e.position_px]) * vs
        tiles.append(
            Tile(
                tile_file_source(f, default="tilefuse.io.tiff:TiffSource"),
                affine_from_offset(vs, offset),
                name=e.file,
                index=len(tiles),
                metadata={"path": str(f), "grid": e.grid, "corr": e.corr, "line": e.line},
            )
        )
    if not tiles:
        msg = f"{pos_file}: none of the listed tiles exist in {folder}"
        raise EmptyTilesetError(msg)
    return tiles
