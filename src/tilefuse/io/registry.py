"""The one table of input formats that `Tileset.open` and the CLI consult.

Each `Reader` names a format, says which paths it recognises (by suffix and
by content: ``sniff``) and points at the function that opens such a path and
returns its tiles. Detection tries the readers in order (``priority``, higher
first, then the order they were registered) and takes the first that accepts
the path; ``format=`` (``--format`` on the command line) picks one by name.

Adding a format is one module with a `~tilefuse.source.Source` subclass and an
``open_*(path, **options) -> list[Tile]`` function, plus one entry::

    from tilefuse.io.registry import Reader, register_reader

    register_reader(
        Reader(
            "myformat",
            "a .myf file of tiles",
            open="mypackage.myformat:open_myformat",
            suffixes=(".myf",),
        )
    )

A package can also publish its reader under the ``tilefuse.readers`` entry
point group (the entry point loads the `Reader`); it is registered the first
time the table is consulted.

Openers are named as ``"module:function"`` strings and imported only when a
path is opened, so consulting the table imports no reader library (h5py,
nd2, zarr, ...).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilefuse.errors import (
    MissingTileError,
    ParameterError,
    ReaderOptionError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tilefuse.tile import Tile

__all__ = [
    "ENTRY_POINT_GROUP",
    "TILE_FILES",
    "Reader",
    "find_reader",
    "get_reader",
    "open_tiles",
    "reader_names",
    "readers",
    "register_reader",
    "register_tile_file",
    "supported_inputs",
    "tile_file_source",
    "unregister_reader",
]

logger = logging.getLogger(__name__)

#: entry point group through which installed packages add readers
ENTRY_POINT_GROUP = "tilefuse.readers"


@dataclass(frozen=True)
class Reader:
    """One input format: how to recognise it and how to open it.

    Parameters
    ----------
    name : str
        Short unique name (``--format`` on the command line).
    description : str
        What the input looks like, for help texts and error messages.
    open : str or callable
        ``open(path, **options)`` returning the tiles (a sequence of `Tile`,
        or a `Tileset`); a ``"module:function"`` string is imported on first use.
    suffixes : tuple of str
        File suffixes (lower case, with the dot) this format uses.
    sniff : callable, optional
        ``sniff(path) -> bool``: whether the path (file or folder) is in this
        format, by content. Without it a file whose suffix is in ``suffixes``
        is accepted.
    requires : tuple of str
        Options without which the format cannot be opened (e.g. ``offsets``
        for HDF5 tiles); detection skips the reader when one is missing.
    priority : int
        Readers with a higher priority are tried first.
    """

    name: str
    description: str
    open: str | Callable[..., Any] = field(repr=False)
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[Path], bool] | None = field(default=None, repr=False)
    requires: tuple[str, ...] = ()
    priority: int = 0

    def accepts(self, path: Path, options: dict[str, Any] | None = None) -> bool:
        """Whether this reader recognises ``path`` (and has the options it requires)."""
        if any(r not in (options or {}) for r in self.requires):
            return False
        if self.sniff is not None:
            try:
                return bool(self.sniff(path))
            except (OSError, ValueError) as e:  # unreadable for this reader: not its format
                logger.debug("%s: %s sniff failed on %s: %s", self.name, self.name, path, e)
                return False
        return path.is_file() and path.suffix.lower() in self.suffixes

    def load(self) -> Callable[..., Any]:
        """The opener function (imported now when given as ``"module:function"``)."""
        return self.open if callable(self.open) else _import(self.open)

    def options(self) -> tuple[str, ...] | None:
        """Keyword options the opener takes (None when it takes any ``**options``)."""
        params = list(inspect.signature(self.load()).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(
            p.name
            for p in params
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )

    def open_path(self, path: str | os.PathLike[str], **options: Any) -> Sequence[Tile]:
        """Open ``path`` with this reader.

        Raises
        ------
        ReaderOptionError
            If an option is not one this reader takes (the message lists them).
        """
        known = self.options()
        unknown = sorted(set(options) - set(known)) if known is not None else []
        if unknown:
            msg = (
                f"{path}: the {self.name} reader takes no option {', '.join(unknown)}; "
                f"it takes {', '.join(known) if known else 'no options'}"
            )
            raise ReaderOptionError(msg)
        return self.load()(Path(path), **options)  # type: ignore[no-any-return]


def _import(spec: str) -> Any:
    """The object named by ``"module:attribute"``."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


_lock = threading.Lock()
_readers: dict[str, Reader] = {}
_entry_points_loaded = False


def register_reader(reader: Reader, *, replace: bool = False) -> Reader:
    """Add a format to the table (returns it, so it can be used as a decorator's value).

    Raises
    ------
    ValueError
        If a reader of that name exists and ``replace`` is false.
    """
    with _lock:
        if reader.name in _readers and not replace:
            msg = f"a reader named {reader.name!r} is already registered (pass replace=True)"
            raise ParameterError(msg)
        _readers[reader.name] = reader
    return reader


def unregister_reader(name: str) -> None:
    """Remove a format from the table (no error when absent)."""
    with _lock:
        _readers.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            reader = ep.load()
        except Exception:  # a broken plugin must not stop the built-in formats
            logger.exception("cannot load tilefuse reader entry point %r", ep.name)
            continue
        if not isinstance(reader, Reader):
            logger.error("entry point %r is not a tilefuse Reader: %r", ep.name, reader)
            continue
        if reader.name not in _readers:
            register_reader(reader)


def readers() -> list[Reader]:
    """The registered readers in detection order."""
    _load_entry_points()
    with _lock:
        table = list(_readers.values())
    order = {r.name: i for i, r in enumerate(table)}
    return sorted(table, key=lambda r: (-r.priority, order[r.name]))


def reader_names() -> list[str]:
    """Names of the registered readers, in detection order."""
    return [r.name for r in readers()]


def get_reader(name: str) -> Reader:
    """The reader called ``name``.

    Raises
    ------
    UnsupportedFormatError
        If there is none (the message lists the names).
    """
    for r in readers():
        if r.name == name:
            return r
    msg = f"no input format named {name!r}; formats: {', '.join(reader_names())}"
    raise UnsupportedFormatError(msg)


def supported_inputs() -> str:
    """One line per format: ``name: description`` (for help texts and errors)."""
    return "\n".join(f"  {r.name:<12} {r.description}" for r in readers())


def find_reader(path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> Reader:
    """The first reader (in detection order) that accepts ``path``.

    Raises
    ------
    MissingTileError
        If the path does not exist.
    UnsupportedFormatError
        If no reader accepts it (the message lists the supported inputs).
    """
    p = Path(path)
    if not p.exists():
        msg = f"input not found: {p}"
        raise MissingTileError(msg)
    for r in readers():
        if r.accepts(p, options):
            return r
    needs = [
        f"{r.name} needs {', '.join(r.requires)}="
        for r in readers()
        if r.requires and any(q not in (options or {}) for q in r.requires)
    ]
    hint = f" ({'; '.join(needs)})" if needs else ""
    msg = f"cannot open {p}: supported inputs are{hint}:\n{supported_inputs()}"
    raise UnsupportedFormatError(msg)


def open_tiles(
    path: str | os.PathLike[str], *, format: str | None = None, **options: Any
) -> Sequence[Tile]:
    """Open ``path`` with the reader that recognises it (or the one named ``format``).

    Returns
    -------
    sequence of Tile
        The reader's tiles (a `Tileset` when the reader makes one itself).

    Raises
    ------
    MissingTileError, UnsupportedFormatError, ReaderOptionError
        For an absent path, an unrecognised one, or an option the reader does not take.
    """
    p = Path(path)
    if format is not None:
        if not p.exists():
            msg = f"input not found: {p}"
            raise MissingTileError(msg)
        reader = get_reader(format)
    else:
        reader = find_reader(p, options)
    logger.debug("opening %s with the %s reader", p, reader.name)
    return reader.open_path(p, **options)


# -- single-file tile formats ---------------------------------------------------------

#: one-file-per-tile formats by suffix: ``"module:factory"`` or a callable
#: ``factory(path, **options) -> Source``; used by the readers that list tile files
#: (positions tables, MIST, TileConfiguration)
TILE_FILES: dict[str, str | Callable[..., Any]] = {
    ".tif": "tilefuse.io.tiff:TiffSource",
    ".tiff": "tilefuse.io.tiff:TiffSource",
    ".jp2": "tilefuse.io.jp2:Jp2Source",
    ".j2k": "tilefuse.io.jp2:Jp2Source",
}


def register_tile_file(suffixes: Sequence[str], factory: str | Callable[..., Any]) -> None:
    """Let tile lists (positions tables, MIST, ...) name files with these suffixes."""
    for suf in suffixes:
        TILE_FILES[suf.lower()] = factory


def tile_file_source(
    path: str | Path, *, default: str | Callable[..., Any] | None = None, **options: Any
) -> Any:
    """A source for one tile file, by suffix; options its factory does not take are dropped.

    Parameters
    ----------
    path : str or Path
        The tile file.
    default : str or callable, optional
        The factory for a suffix not in `TILE_FILES` (default: refuse).
    **options
        Passed to the factory when it takes them (``series=``, ``components=``).

    Raises
    ------
    UnsupportedFormatError
        If the suffix is not in `TILE_FILES` and there is no ``default``.
    """
    p = Path(path)
    spec = TILE_FILES.get(p.suffix.lower(), default)
    if spec is None:
        msg = f"{p}: tile files must be one of {', '.join(sorted(TILE_FILES))}"
        raise UnsupportedFormatError(msg)
    factory = spec if callable(spec) else _import(spec)
    params = inspect.signature(factory).parameters
    if not any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return factory(p, **options)


# -- built-in formats ------------------------------------------------------------------


def _head(path: Path, n: int = 4096) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _text_lines(path: Path, n: int = 64) -> list[str]:
    return _head(path, 16384).decode("utf-8-sig", errors="replace").splitlines()[:n]


def _is_tileconfig_file(p: Path) -> bool:
    if not (p.is_file() and p.suffix.lower() == ".txt"):
        return False
    return any(line.strip().lower().replace(" ", "").startswith("dim=") for line in _text_lines(p))


def _sniff_tileconfig(p: Path) -> bool:
    if p.is_dir():
        return any(p.glob("TileConfiguration*.txt"))
    return _is_tileconfig_file(p)


def _sniff_bigstitcher(p: Path) -> bool:
    if not p.is_file():
        return False
    if p.suffix.lower() == ".xml":
        return b"<SpimData" in _head(p)
    return p.suffix.lower() in (".h5", ".hdf5") and p.with_suffix(".xml").is_file()


def _sniff_nd2(p: Path) -> bool:
    if p.is_dir():
        return any(p.glob("*.nd2"))
    return p.is_file() and p.suffix.lower() == ".nd2"


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in ("zarr.json", ".zgroup", ".zattrs"))


def _sniff_ome_zarr(p: Path) -> bool:
    return _is_zarr(p) or (p.is_dir() and any(_is_zarr(c) for c in p.glob("*.zarr")))


def _sniff_hdf5(p: Path) -> bool:
    return p.is_file() and _head(p, 8) == b"\x89HDF\r\n\x1a\n"


def _open_bigstitcher(
    path: Path,
    *,
    timepoint: int | None = None,
    angle: int | None = None,
    world_unit_um: Any = None,
) -> Any:
    """A BigStitcher/BDV project from its XML, or from the ``.h5`` beside it."""
    xml = path if path.suffix.lower() == ".xml" else path.with_suffix(".xml")
    opener = _import("tilefuse.io.project:tiles_from_spimdata")
    return opener(xml, timepoint=timepoint, angle=angle, world_unit_um=world_unit_um)


for _reader in (
    Reader(
        "tileconfig",
        "a Fiji TileConfiguration*.txt (positions in pixels; --voxel-size) or a folder holding one",
        "tilefuse.io.tileconfig:open_tileconfig",
        suffixes=(".txt",),
        sniff=_sniff_tileconfig,
    ),
    Reader(
        "mist",
        "a NIST MIST global-positions-*.txt (pixels; --voxel-size), or a folder holding one "
        "(or one level down); images beside it or in its parent folder",
        "tilefuse.io.mist:open_mist",
        suffixes=(".txt",),
        sniff=lambda p: _import("tilefuse.io.mist:sniff_mist")(p),
    ),
    Reader(
        "bigstitcher",
        "a BigStitcher/BigDataViewer project .xml (or the .h5 beside it)",
        _open_bigstitcher,
        suffixes=(".xml",),
        sniff=_sniff_bigstitcher,
    ),
    Reader(
        "nd2",
        "a Nikon .nd2 file (every XY position is a tile) or a folder of them",
        "tilefuse.io.nd2:open_nd2",
        suffixes=(".nd2",),
        sniff=_sniff_nd2,
    ),
    Reader(
        "ome-zarr",
        "an OME-Zarr image, a store of images or a folder of *.zarr images (one per tile)",
        "tilefuse.io.ome_zarr_tiles:open_ome_zarr",
        suffixes=(".zarr",),
        sniff=_sniff_ome_zarr,
    ),
    Reader(
        "positions",
        "a folder of tile files (.tif, .jp2, ...) with a positions .csv (z, y, x um; "
        "or *_px; optional file column) or exm .npy, or that positions file",
        "tilefuse.io.positions:open_positions",
        suffixes=(".csv", ".npy"),
        sniff=lambda p: _import("tilefuse.io.positions:sniff_positions")(p),
    ),
    Reader(
        "hdf5",
        "an HDF5 file with one dataset per tile, with offsets= (array or offsets file)",
        "tilefuse.io.h5:open_hdf5",
        suffixes=(".h5", ".hdf5"),
        sniff=_sniff_hdf5,
        requires=("offsets",),
        priority=1,  # with offsets= an .h5 is tiles, even with a BDV .xml beside it
    ),
):
    register_reader(_reader)
del _reader
