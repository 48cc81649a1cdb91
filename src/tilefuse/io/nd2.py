"""Nikon ND2 tiles through the ``nd2`` package's public API.

Each XY position of a multi-position file is one tile; channels stay
channels; the z-stack is the tile's z; one timepoint is selected. Frames are
read one by one (``ND2File.read_frame``) when a region needs them, never the
whole file.

Stage positions (micrometres, the stage's X, Y, Z) become tile offsets
``(z, y, x) = signs * (Z, Y, X)``. On common Nikon setups the stage X axis runs
against the image x axis, so the default ``stage_signs`` is ``(1, 1, -1)``
(z and y as reported, x flipped). If neighbouring tiles land on the wrong
side in a preview, pass ``stage_signs=(1, 1, 1)`` (or flip y with
``(1, -1, -1)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import MissingTileError, ParameterError, SelectionError, UnsupportedFormatError
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = ["DEFAULT_STAGE_SIGNS", "Nd2Position", "Nd2Source", "nd2_positions", "open_nd2"]

#: (z, y, x) signs applied to stage positions: stage X runs against image x on common setups
DEFAULT_STAGE_SIGNS = (1.0, 1.0, -1.0)


@dataclass(frozen=True)
class Nd2Position:
    """One XY position of an ND2 file: its index, name and stage position (Z, Y, X) in um."""

    index: int
    name: str
    stage_zyx_um: tuple[float, float, float]


def _open(path: Path) -> Any:
    import nd2

    if not path.is_file():
        msg = f"ND2 file not found: {path}"
        raise MissingTileError(msg)
    try:
        return nd2.ND2File(path)
    except Exception as e:  # nd2 raises OSError / ValueError / its own errors on bad files
        msg = f"{path}: not a readable ND2 file ({e})"
        raise UnsupportedFormatError(msg) from e


def _frame_table(f: Any) -> dict[tuple[int, int, int], int]:
    """(timepoint, position, z) -> frame index, from the file's loop indices."""
    table = {}
    for i, li in enumerate(f.loop_indices):
        table[(li.get("T", 0), li.get("P", 0), li.get("Z", 0))] = i
    return table


def nd2_positions(path: str | os.PathLike[str], timepoint: int = 0) -> list[Nd2Position]:
    """The XY positions of an ND2 file with their stage positions (first z plane).

    Raises
    ------
    MissingTileError, UnsupportedFormatError
        For a missing or unreadable file.
    """
    path = Path(path)
    with _open(path) as f:
        n_t = int(f.sizes.get("T", 1))
        if not 0 <= int(timepoint) < n_t:  # a negative index must not read from the end
            msg = f"{path}: no timepoint {timepoint}: the file has {n_t} (0 to {n_t - 1})"
            raise SelectionError(msg)
        table = _frame_table(f)
        n_pos = int(f.sizes.get("P", 1))
        out = []
        for p in range(n_pos):
            idx = table.get((timepoint, p, 0))
            if idx is None:
                msg = f"{path}: no frame for timepoint {timepoint}, position {p}"
                raise UnsupportedFormatError(msg)
            pos = f.frame_metadata(idx).channels[0].position.stagePositionUm
            out.append(
                Nd2Position(p, f"{path.stem}_p{p}", (float(pos.z), float(pos.y), float(pos.x)))
            )
    return out


class Nd2Source(Source):
    """Lazy pixel source: one position and timepoint of an ND2 file, ``(c, z, y, x)``.

    Thread-safe (a lock around the file) and picklable by path.
    """

    def __init__(self, path: str | os.PathLike[str], position: int = 0, timepoint: int = 0) -> None:
        self.path, self.position, self.timepoint = Path(path), int(position), int(timepoint)
        with _open(self.path) as f:
            sizes = dict(f.sizes)
            if "S" in sizes:
                msg = f"{self.path}: RGB ND2 files are not supported"
                raise UnsupportedFormatError(msg)
            for axis, want in (("P", self.position), ("T", self.timepoint)):
                if not 0 <= want < sizes.get(axis, 1):
                    msg = (
                        f"{self.path}: {axis} index {want} out of range (size {sizes.get(axis, 1)})"
                    )
                    raise SelectionError(msg)
            table = _frame_table(f)
            self._frames = [
                table[(self.timepoint, self.position, z)] for z in range(sizes.get("Z", 1))
            ]
            self.n_timepoints = int(sizes.get("T", 1))
            c, z = int(sizes.get("C", 1)), int(sizes.get("Z", 1))
            self._shape = (c, z, int(sizes["Y"]), int(sizes["X"]))
            self._dtype = np.dtype(f.dtype)
            self.channel_names = tuple(c.channel.name for c in f.metadata.channels)
            vs = f.voxel_size()
            self.voxel_size_zyx = (float(vs.z), float(vs.y), float(vs.x))

    def _read(self, region: Region) -> NDArray[Any]:
        """Read ``(c, z, y, x)`` pixels, one frame (z plane, all channels) at a time."""
        zs = range(region[0].start, region[0].stop)
        out = np.empty(
            (
                self._shape[0],
                len(zs),
                region[1].stop - region[1].start,
                region[2].stop - region[2].start,
            ),
            dtype=self._dtype,
        )
        with self._locked() as f:
            for k, z in enumerate(zs):
                frame = np.asarray(f.read_frame(self._frames[z]))
                frame = frame.reshape(self._shape[0], self._shape[2], self._shape[3])
                out[:, k] = frame[:, region[1], region[2]]
        return out

    def _open(self) -> Any:
        return _open(self.path)

    def __repr__(self) -> str:
        return f"Nd2Source({str(self.path)!r}, position={self.position}, shape={self.shape})"


def open_nd2(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    timepoint: int = 0,
    stage_signs: ArrayLike | None = None,
    positions_um: ArrayLike | None = None,
) -> list[Tile]:
    """Tiles of ND2 files: every XY position of every file is one tile.

    ``paths`` is one file, several files, or a folder of ``*.nd2`` files
    (sorted by name). See `tilefuse.Tileset.from_nd2` for the parameters.

    Raises
    ------
    ValueError
        If ``positions_um`` is not one (Z, Y, X) row per tile.
    """
    from tilefuse.geometry import affine_from_offset
    from tilefuse.tile import Tile

    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        files: list[Any] = sorted(p.glob("*.nd2")) if p.is_dir() else [p]
    else:
        files = list(paths)
    sources, stage = [], []
    for f in files:
        for pos in nd2_positions(f, timepoint):
            sources.append(Nd2Source(f, pos.index, timepoint))
            stage.append(pos.stage_zyx_um)
    table = np.asarray(positions_um if positions_um is not None else stage, dtype=float)
    if table.shape != (len(sources), 3):
        msg = f"positions_um must be ({len(sources)}, 3) (stage Z, Y, X); got {table.shape}"
        raise ParameterError(msg)
    signs = np.asarray(DEFAULT_STAGE_SIGNS if stage_signs is None else stage_signs, dtype=float)
    offs = table * signs
    return [
        Tile(
            s,
            affine_from_offset(s.voxel_size_zyx, o),
            name=f"{Path(s.path).stem}_p{s.position}",
            index=i,
            channels=tuple(s.channel_names),
            metadata={
                "path": str(s.path),
                "position": s.position,
                "stage_zyx_um": list(o),
                "timepoint": int(timepoint),
                "timepoints": list(range(s.n_timepoints)),
            },
        )
        for i, (s, o) in enumerate(zip(sources, offs, strict=True))
    ]
