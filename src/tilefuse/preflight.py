"""Checks that run before any output is created: inputs readable, plan size sane, paths apart.

Every writer calls `preflight` first, so a run that cannot succeed fails in
seconds, with the input named, and leaves nothing on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import CorruptFileError, OutputTooLargeError, TilefuseError
from tilefuse.io.outputs import check_output_paths, input_paths
from tilefuse.parallel import imap_unordered

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAX_OUTPUT_RATIO",
    "check_output_size",
    "preflight",
    "probe_tiles",
    "source_identity",
]

logger = logging.getLogger(__name__)

#: an output grid with more voxels than this times the tiles' total is refused unless allowed
MAX_OUTPUT_RATIO = 100.0


def check_output_size(
    tiles: Sequence[Any],
    shape: Sequence[int],
    itemsize: int,
    *,
    allow_large_output: bool = False,
) -> None:
    """Refuse an output grid far larger than the tiles together (a likely placement error).

    Parameters
    ----------
    tiles : sequence of Tile
        The inputs.
    shape : sequence of int
        The output's spatial shape (z, y, x).
    itemsize : int
        Bytes per voxel of one channel.
    allow_large_output : bool
        Skip the check.

    Raises
    ------
    OutputTooLargeError
        If the output has more than `MAX_OUTPUT_RATIO` times the tiles' voxels.
    """
    if allow_large_output:
        return
    n_out = float(np.prod([float(s) for s in shape]))
    n_in = float(sum(float(np.prod([float(s) for s in t.shape])) for t in tiles))
    if n_out <= MAX_OUTPUT_RATIO * max(n_in, 1.0):
        return
    msg = (
        f"the output grid {tuple(int(s) for s in shape)} has {n_out:.3g} voxels "
        f"({n_out * itemsize / 1e9:.3g} GB per channel), {n_out / max(n_in, 1.0):.3g}x the "
        f"{len(tiles)} tiles' {n_in:.3g} voxels: check the tile positions and voxel size, or "
        "pass allow_large_output=True (--allow-large-output) to write it anyway"
    )
    raise OutputTooLargeError(msg)


class _Probe:
    """Read one voxel at each far corner of a tile (a truncated file fails here)."""

    def __call__(self, tile: Any) -> None:
        z, y, x = (int(s) for s in tile.shape)
        for region in (
            (slice(0, 1), slice(0, 1), slice(0, 1)),
            (slice(z - 1, z), slice(y - 1, y), slice(x - 1, x)),
        ):
            try:
                tile.source.read(region)
            except TilefuseError:
                raise
            except Exception as e:
                where = tile.metadata.get("path") or getattr(tile.source, "path", None)
                detail = " ".join(str(e).split())[:200]
                msg = (
                    f"tile {tile.name!r}{f' ({where})' if where else ''} cannot be read at "
                    f"voxel {tuple(r.start for r in region)} of its {(z, y, x)} shape: {detail}"
                )
                raise CorruptFileError(msg) from e


def probe_tiles(tiles: Sequence[Any], *, workers: int | None = None) -> None:
    """Read the first and last voxel of every tile, in parallel.

    Raises
    ------
    CorruptFileError
        Naming the first tile that cannot be read.
    """
    for _ in imap_unordered(_Probe(), list(tiles), workers=workers, desc="check", unit="tile"):
        pass


def preflight(
    tiles: Sequence[Any],
    output: str | os.PathLike[str] | None,
    shape: Sequence[int],
    itemsize: int,
    *,
    allow_large_output: bool = False,
    workers: int | None = None,
) -> None:
    """All checks before an output is created: size bound, path overlap, inputs readable.

    Raises
    ------
    OutputTooLargeError, OutputOverlapError, CorruptFileError
    """
    check_output_size(tiles, shape, itemsize, allow_large_output=allow_large_output)
    if output is not None:
        check_output_paths(Path(output), input_paths(tiles))
    probe_tiles(tiles, workers=workers)


_SOURCE_ATTRS: tuple[str, ...] = ("channels", "factors", "method", "series", "dataset")
_SOURCE_ATTRS += ("setups", "timepoint", "position", "level", "array_path", "angle")


def _file_identity(path: Path) -> list[Any]:
    """Path, size and modification time (ns) of a file; of a store folder, its metadata files."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p), None, None]
    out: list[Any] = [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        for meta in ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json"):
            if (p / meta).is_file():
                m = (p / meta).stat()
                out.append([meta, m.st_size, m.st_mtime_ns])
    return out


def _digest_of(obj: Any) -> str | None:
    """A content digest of a lookup table or array held by a source (None when unknown)."""
    h = hashlib.sha1()
    if isinstance(obj, np.ndarray):
        h.update(str((obj.dtype.str, obj.shape)).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
        return h.hexdigest()
    keys, values = getattr(obj, "keys", None), getattr(obj, "values", None)
    if isinstance(keys, np.ndarray) and isinstance(values, np.ndarray):  # a sparse label table
        h.update(np.ascontiguousarray(keys).tobytes())
        h.update(np.ascontiguousarray(values).tobytes())
        return h.hexdigest()
    return None


def source_identity(source: Any) -> list[dict[str, Any]]:
    """What a tile's pixels come from: each (wrapped) source's kind, files and settings.

    Files are identified by path, size and modification time (store folders by
    their metadata files); channel selections, downscaling, label lookup tables
    (by content digest) and in-memory arrays (by content digest) by value.
    """
    chain: list[dict[str, Any]] = []
    for _ in range(32):
        if source is None:
            break
        d: dict[str, Any] = {"type": type(source).__name__}
        path = getattr(source, "path", None)
        if isinstance(path, (str, os.PathLike)):
            d["file"] = _file_identity(Path(path))
        for attr in _SOURCE_ATTRS:
            v = getattr(source, attr, None)
            if isinstance(v, (int, float, str, tuple, list)) and not callable(v):
                d[attr] = json.loads(json.dumps(v, default=str))
        for attr in ("lut", "table", "gains", "flatfield", "corrections"):
            if getattr(source, attr, None) is not None:
                d[attr] = _digest_of(getattr(source, attr)) or repr(type(getattr(source, attr)))
        array = getattr(source, "_array", None)
        if isinstance(array, np.ndarray):
            d["array"] = _digest_of(array)
        chain.append(d)
        source = getattr(source, "source", None)
    return chain
