"""Every exception tilefuse raises on purpose.

Each class also inherits the builtin a caller would naturally catch, so
``except FileNotFoundError`` still works for a missing tile.
"""

from __future__ import annotations

__all__ = [
    "CorrectionError",
    "CorruptFileError",
    "EmptyTilesetError",
    "GridMismatchError",
    "IncompatibleTilesError",
    "IncompleteStoreError",
    "LabelError",
    "MissingDependencyError",
    "MissingTileError",
    "NotFoundError",
    "OutputExistsError",
    "ParameterError",
    "ParameterTypeError",
    "ReaderOptionError",
    "RegionError",
    "SelectionError",
    "StateError",
    "OutputOverlapError",
    "OutputTooLargeError",
    "ResumeMismatchError",
    "StoreLockedError",
    "StoreError",
    "TileConfigError",
    "TilefuseError",
    "UnsupportedFormatError",
    "WriteError",
]


class TilefuseError(Exception):
    """Root of every error tilefuse raises on purpose."""


class TileConfigError(TilefuseError, ValueError):
    """A positions file (TileConfiguration.txt, ...) is malformed."""


class MissingTileError(TilefuseError, FileNotFoundError):
    """A tile listed in a positions file or given by path does not exist."""


class UnsupportedFormatError(TilefuseError, OSError):
    """An input is not in a format tilefuse can read."""


class EmptyTilesetError(TilefuseError, ValueError):
    """An operation needs at least one tile and got none."""


class IncompatibleTilesError(TilefuseError, ValueError):
    """Tiles of one tileset disagree (dimensionality, channels, dtype, ...)."""


class LabelError(TilefuseError, ValueError):
    """Label images or a label mapping are invalid (float dtype, negative ids, wrong tileset)."""


class OutputExistsError(TilefuseError, FileExistsError):
    """The output path exists and ``overwrite`` was not requested."""


class StoreError(TilefuseError, OSError):
    """An output store is not what tilefuse expected (foreign, corrupt, mismatched)."""


class SelectionError(TilefuseError, IndexError, ValueError):
    """A timepoint, angle, channel or level was asked for that the input does not have."""


class RegionError(TilefuseError, ValueError, IndexError):
    """A pixel region is not 3 step-1 slices (z, y, x)."""


class ReaderOptionError(TilefuseError, TypeError):
    """An option was given to an input reader that does not take it."""


class CorrectionError(TilefuseError, ValueError):
    """Intensity corrections are invalid or cannot be estimated (bad flat-field, no signal)."""


class GridMismatchError(IncompatibleTilesError):
    """Two voxel grids that must coincide do not (voxel size, origin, shape or placement)."""


class ParameterError(TilefuseError, ValueError):
    """An argument has a value tilefuse cannot use (an unknown mode, a bad shape, out of range)."""


class ParameterTypeError(TilefuseError, TypeError):
    """An argument has a type tilefuse cannot use."""


class NotFoundError(TilefuseError, KeyError):
    """A channel, view, timepoint or sample file asked for by name or id does not exist."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one reads like the others
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(TilefuseError, ImportError):
    """An optional dependency a feature needs is not installed (the message says which)."""


class StateError(TilefuseError, RuntimeError):
    """An object was used out of order (e.g. a block writer before ``begin``)."""


class CorruptFileError(TilefuseError, OSError):
    """An input file is truncated or corrupt (its header promises more than it holds)."""


class OutputOverlapError(TilefuseError, ValueError):
    """An output path is, contains, or lies inside one of the inputs."""


class OutputTooLargeError(TilefuseError, ValueError):
    """The planned output is far larger than the inputs (a likely placement or size error)."""


class StoreLockedError(TilefuseError, BlockingIOError):
    """Another live writer holds the output's lock."""


class ResumeMismatchError(OutputExistsError):
    """An unfinished output was started with other inputs or settings than this run."""


class IncompleteStoreError(StoreError):
    """A store is an unfinished write (interrupted); it is not used as input unless asked."""


class WriteError(TilefuseError, OSError):
    """Writing an output failed (disk full, quota, file too large, I/O error)."""
