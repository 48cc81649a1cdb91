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

from tilefuse.errors import MissingTileError, UnsupportedFormatError
from tilefuse.source import FileHandleMixin

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["DEFAULT_STAGE_SIGNS", "Nd2Position", "Nd2Source", "nd2_positions"]

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


class Nd2Source(FileHandleMixin):
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
                    raise IndexError(msg)
            table = _frame_table(f)
            self._frames = [
                table[(self.timepoint, self.position, z)] for z in range(sizes.get("Z", 1))
            ]
            self._shape = (sizes.get("C", 1), sizes.get("Z", 1), sizes["Y"], sizes["X"])
            self._dtype = np.dtype(f.dtype)
            self.channel_names = [c.channel.name for c in f.metadata.channels]
            vs = f.voxel_size()
            self.voxel_size_zyx = (float(vs.z), float(vs.y), float(vs.x))
        self._init_handle()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype."""
        return self._dtype

    def read(self, region: Region) -> NDArray[Any]:
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
        with self._lock:
            f = self._handle()
            for k, z in enumerate(zs):
                frame = np.asarray(f.read_frame(self._frames[z]))
                frame = frame.reshape(self._shape[0], self._shape[2], self._shape[3])
                out[:, k] = frame[:, region[1], region[2]]
        return out

    def _open_file(self) -> Any:
        return _open(self.path)

    def __del__(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()

    def __repr__(self) -> str:
        return f"Nd2Source({str(self.path)!r}, position={self.position}, shape={self.shape})"
