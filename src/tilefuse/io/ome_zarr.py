"""OME-Zarr writer and reader: `MultiScaleGroup`.

NGFF 0.5 on zarr v3 (default, sharded) or NGFF 0.4 on zarr v2 (``/`` chunk
keys). Level 0 is written block by block, each block one whole shard (or one
chunk when unsharded) written once by one task; lower levels are computed
block-wise from the level above (`add_downsample_level`).

Coordinates are voxel centres, as NGFF defines them: ``translation`` is the
centre of voxel 0. Level ``i`` made from level ``i - 1`` by factors ``f`` has
``scale = s_{i-1} * f``; a mean or mode over ``f`` voxels sits at the mean of
their centres, ``translation = t_{i-1} + (f - 1) / 2 * s_{i-1}``, while
``nearest`` keeps the first voxel of each window and its centre,
``translation = t_{i-1}``. Stores written by other tools are read with their
own per-level ``scale`` and ``translation``.

Progress of a write is recorded compactly under ``<store>/.tilefuse-progress/``:
one append-only log per writing process and level, 8 bytes (the block's C-order
index) per finished block, so the done set of a resume is read once, in
O(blocks), from a handful of files. The group attribute ``tilefuse.status ==
"incomplete"`` stays until `mark_complete` removes both, so an interrupted
write can be resumed and an incomplete store is never mistaken for a finished
one. ``tilefuse.levels_complete`` counts the finished levels: a downsampled
level is listed in the metadata only once all its blocks are written.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from tilefuse.errors import (
    LabelError,
    OutputExistsError,
    ParameterError,
    SelectionError,
    StoreError,
)
from tilefuse.parallel import imap_unordered
from tilefuse.pyramid import METHODS, downsample, downsample_factors

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = ["MultiScaleGroup", "default_chunks"]

logger = logging.getLogger(__name__)

Version = Literal["0.4", "0.5"]
Block = tuple[int, int, int]
_PROGRESS = ".tilefuse-progress"
_COLORS = ("FFFFFF", "00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF")


def default_chunks(shape: Sequence[int], dtype: Any) -> tuple[int, int, int]:
    """Default chunk (z, y, x): about 1 MiB, 32 x 128 x 128 for uint16, clipped to the shape."""
    itemsize = np.dtype(dtype).itemsize
    yx = 128 if itemsize <= 2 else 64 if itemsize >= 8 else 96
    want = (32, yx, yx)
    return tuple(max(1, min(int(s), w)) for s, w in zip(shape[-3:], want, strict=True))  # type: ignore[return-value]


def _default_shards(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, int, int]:
    """Default shard: 2 x 4 x 4 chunks, clipped to whole chunks covering the shape."""
    out = []
    for s, c, m in zip(shape[-3:], chunks, (2, 4, 4), strict=True):
        n_chunks = -(-int(s) // int(c))
        out.append(int(c) * max(1, min(m, n_chunks)))
    return (out[0], out[1], out[2])


def _codecs(kind: str, zarr_format: int, compression: str) -> Any:
    """Compressor(s) for an image or label array."""
    if compression == "none":
        return None
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, ZstdCodec

        if kind == "label":
            return [ZstdCodec(level=3)]
        cname, clevel = {"default": ("zstd", 1), "fast": ("lz4", 5), "archive": ("zstd", 5)}[
            compression
        ]
        return [BloscCodec(cname=cname, clevel=clevel, shuffle="shuffle")]  # type: ignore[arg-type]
    from numcodecs import Blosc, Zstd

    if kind == "label":
        return Zstd(level=3)
    cname, clevel = {"default": ("zstd", 1), "fast": ("lz4", 5), "archive": ("zstd", 5)}[
        compression
    ]
    return Blosc(cname=cname, clevel=clevel, shuffle=Blosc.SHUFFLE)


class MultiScaleGroup:
    """A multiscale OME-Zarr image (or label image) on disk.

    Use `create` for a new store and `open` for an existing one.

    Parameters
    ----------
    path : str or PathLike
        The group's folder.
    group : zarr.Group
        The opened group.
    """

    def __init__(self, path: str | os.PathLike[str], group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group
        self._arrays: dict[int, zarr.Array] = {}
        self._reload_attrs()

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        shape: Sequence[int],
        dtype: Any,
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        origin: ArrayLike = (0.0, 0.0, 0.0),
        unit: str | None = "micrometer",
        name: str | None = None,
        channel_names: Sequence[str] | None = None,
        chunks: Sequence[int] | None = None,
        shards: Sequence[int] | bool | None = True,
        version: Version = "0.5",
        compression: Literal["default", "fast", "archive", "none"] = "default",
        kind: Literal["image", "label"] = "image",
        overwrite: bool = False,
        attributes: dict[str, Any] | None = None,
    ) -> MultiScaleGroup:
        """Create a new multiscale group holding an empty level 0.

        Parameters
        ----------
        path : str or PathLike
            Folder of the new store (``*.ome.zarr`` by convention).
        shape : sequence of int
            ``(z, y, x)`` or ``(c, z, y, x)`` of level 0.
        dtype : dtype-like
            Pixel type; label images must be integers.
        voxel_size, origin : array_like of 3 floats
            Level-0 voxel size and world position of voxel 0, (z, y, x), in ``unit``.
        unit : str or None
            UDUNITS-2 name of the spatial unit; ``None`` for unitless (pixel)
            data: the axes then carry no unit.
        name : str, optional
            Image name (defaults to the folder name).
        channel_names : sequence of str, optional
            One per channel of a ``(c, z, y, x)`` shape (``omero`` metadata).
        chunks : sequence of 3 ints, optional
            Chunk (z, y, x); default about 1 MiB (see `default_chunks`).
        shards : sequence of 3 ints, bool, optional
            Shard (z, y, x) for NGFF 0.5 (multiples of ``chunks``); ``True``
            picks 2 x 4 x 4 chunks, ``False``/``None`` writes unsharded. Ignored
            for NGFF 0.4 (zarr v2 has no shards).
        version : {"0.5", "0.4"}
            NGFF version: 0.5 writes zarr v3, 0.4 writes zarr v2.
        compression : {"default", "fast", "archive", "none"}
            Images: blosc-zstd level 1 + shuffle, blosc-lz4, blosc-zstd level 5.
            Labels always use zstd level 3 unless ``"none"``.
        kind : {"image", "label"}
            Label images are written with ``image-label`` metadata and mode
            downsampling by default.
        overwrite : bool
            Replace an existing zarr store at ``path``. A folder that is not a
            zarr store is never deleted.
        attributes : dict, optional
            Extra group attributes.

        Returns
        -------
        MultiScaleGroup

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        StoreError
            If ``path`` exists, is not a zarr store, and ``overwrite`` is true.
        """
        path = Path(path)
        _prepare_output(path, overwrite)
        if version not in ("0.4", "0.5"):
            msg = f"version must be '0.4' or '0.5', got {version!r}"
            raise ParameterError(msg)
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (3, 4) or min(shape) < 1:
            msg = f"shape must be (z, y, x) or (c, z, y, x) with positive sizes, got {shape}"
            raise ParameterError(msg)
        dt = np.dtype(dtype)
        if kind == "label" and not np.issubdtype(dt, np.integer):
            msg = f"label images must have an integer dtype, got {dt}"
            raise LabelError(msg)
        zarr_format = 3 if version == "0.5" else 2
        chunks = tuple(int(c) for c in (chunks or default_chunks(shape, dt)))
        chunks = tuple(max(1, min(c, s)) for c, s in zip(chunks, shape[-3:], strict=True))
        shard: tuple[int, ...] | None = None
        if zarr_format == 3 and shards:
            shard = _default_shards(shape, chunks) if shards is True else tuple(shards)  # type: ignore[arg-type]
            if any(s % c for s, c in zip(shard, chunks, strict=True)):
                msg = f"shards {shard} must be whole multiples of chunks {chunks}"
                raise ParameterError(msg)
        group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
        n_channels = shape[0] if len(shape) == 4 else None
        info = {
            "kind": kind,
            "status": "incomplete",
            "chunks": list(chunks),
            "shards": list(shard) if shard else None,
            "compression": compression,
            "voxel_size": [float(v) for v in np.asarray(voxel_size, dtype=float)],
            "origin": [float(v) for v in np.asarray(origin, dtype=float)],
            "unit": unit,
            "name": name or path.name.split(".")[0],
            "dtype": dt.str,
            "channel_names": list(channel_names)
            if channel_names
            else ([f"ch{i}" for i in range(n_channels)] if n_channels else None),
            "methods": [],
            "levels_complete": 0,
        }
        group.attrs.update({**(attributes or {}), "tilefuse": info})
        msg_group = cls(path, group)
        msg_group._create_level(0, shape)
        msg_group._write_metadata()
        return msg_group

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: Literal["r", "r+"] = "r") -> MultiScaleGroup:
        """Open an existing multiscale group (written by tilefuse or by other tools).

        Raises
        ------
        StoreError
            If ``path`` is not a zarr group with ``multiscales`` metadata.
        """
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode=mode)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
            msg = f"{path}: not a zarr group"
            raise StoreError(msg) from e
        return cls(path, group)

    def _reload_attrs(self) -> None:
        attrs: dict[str, Any] = dict(self.group.attrs)
        self.zarr_format = int(self.group.metadata.zarr_format)
        ome = attrs.get("ome", attrs) if self.zarr_format == 3 else attrs
        self._info: dict[str, Any] = dict(attrs.get("tilefuse", {}))
        ms = ome.get("multiscales")
        if not ms and not self._info:
            msg = f"{self.path}: zarr group has no OME 'multiscales' metadata"
            raise StoreError(msg)
        if not self._info and ms:  # a foreign store: derive what we need from its metadata
            self._info = _info_from_multiscales(ms[0], ome, self.path)
            self._info.update(self._array_info())

    def _array_info(self) -> dict[str, Any]:
        """Chunks, shards and dtype of a foreign store, as its level-0 array has them."""
        node = self.group.get(self._level_path(0))
        if not isinstance(node, zarr.Array):
            msg = f"{self.path}: multiscales dataset {self._level_path(0)!r} is not a zarr array"
            raise StoreError(msg)
        shards = node.shards
        return {
            "chunks": [int(c) for c in node.chunks[-3:]],
            "shards": [int(s) for s in shards[-3:]] if shards is not None else None,
            "dtype": str(node.dtype),
        }

    def _level_path(self, level: int) -> str:
        """The array path of ``level`` (``datasets[level].path``; ``"0"``, ``"1"``... by default).

        A level beyond those listed continues the store's own naming
        (``s0, s1`` -> ``s2``) when the listed paths are a prefix plus the level.
        """
        paths = self._info.get("level_paths") or []
        if level < len(paths):
            return str(paths[level])
        prefix = str(paths[0])[:-1] if paths else ""
        if paths and all(str(p) == f"{prefix}{i}" for i, p in enumerate(paths)):
            return f"{prefix}{level}"
        return str(level)

    # -- properties -----------------------------------------------------------------
    @property
    def version(self) -> Version:
        """NGFF version of the store."""
        return "0.5" if self.zarr_format == 3 else "0.4"

    @property
    def kind(self) -> str:
        """``"image"`` or ``"label"``."""
        return str(self._info.get("kind", "image"))

    @property
    def voxel_size(self) -> NDArray[np.float64]:
        """Level-0 voxel size (z, y, x)."""
        return np.array(self._info["voxel_size"], dtype=float)

    @property
    def origin(self) -> NDArray[np.float64]:
        """World position (z, y, x) of level-0 voxel 0."""
        return np.array(self._info["origin"], dtype=float)

    @property
    def unit(self) -> str | None:
        """Spatial unit (``None``: unitless, e.g. a store whose axes name no unit)."""
        unit = self._info.get("unit", "micrometer")
        return None if unit is None else str(unit)

    @property
    def name(self) -> str:
        """Image name."""
        return str(self._info.get("name", self.path.name))

    @property
    def channel_names(self) -> list[str] | None:
        """Channel names, or None for a single-channel ``(z, y, x)`` image."""
        names = self._info.get("channel_names")
        return list(names) if names else None

    @property
    def n_levels(self) -> int:
        """Number of resolution levels present (for a tilefuse write: the finished ones)."""
        done = self._info.get("levels_complete")
        if done is not None:  # level 0 is always listed; lower levels once complete
            return max(1, int(done))
        n = 0
        while n in self._arrays or isinstance(self.group.get(self._level_path(n)), zarr.Array):
            n += 1
        return n

    def set_levels_complete(self, n: int) -> None:
        """Record that levels ``0 .. n - 1`` are completely written (and list them)."""
        self._info["levels_complete"] = int(n)
        self._write_metadata()

    def drop_levels_from(self, level: int) -> None:
        """Delete arrays of ``level`` and beyond (unfinished levels of an earlier run)."""
        n = int(level)
        while isinstance(self.group.get(str(n)), zarr.Array):
            del self.group[str(n)]
            self._arrays.pop(n, None)
            n += 1

    @property
    def levels(self) -> list[zarr.Array]:
        """The zarr arrays, highest resolution first."""
        return [self[i] for i in range(self.n_levels)]

    def __getitem__(self, level: int) -> zarr.Array:
        arr = self._arrays.get(level)
        if arr is None:
            node = self.group[self._level_path(level)]
            assert isinstance(node, zarr.Array)
            arr = node
            self._arrays[level] = arr
        return arr

    @property
    def is_complete(self) -> bool:
        """False while a tilefuse write of this store is unfinished."""
        return self._info.get("status", "complete") == "complete"

    def factors(self, level: int) -> NDArray[np.float64]:
        """Cumulative downsampling factors (z, y, x) of ``level`` relative to level 0."""
        f = np.ones(3)
        known = self._info.get("level_factors", [])
        for i in range(1, level + 1):
            if i <= len(known):
                f *= np.array(known[i - 1], dtype=float)
            else:  # a foreign store: infer from the shapes
                a, b = self[i - 1].shape[-3:], self[i].shape[-3:]
                f *= np.array([round(x / y) for x, y in zip(a, b, strict=True)], dtype=float)
        return f

    def level_voxel_size(self, level: int) -> NDArray[np.float64]:
        """Voxel size (z, y, x) of ``level``."""
        declared = self._info.get("level_scales")
        if declared and level < len(declared):  # a foreign store: as its metadata says
            return np.array(declared[level], dtype=float)
        return self.voxel_size * self.factors(level)

    def level_origin(self, level: int) -> NDArray[np.float64]:
        """World position of the centre of voxel 0 of ``level``.

        Each mean/mode level moves it by ``(f - 1) / 2`` voxels of the level
        above (the mean of the merged voxels' centres); a ``nearest`` level
        keeps it (the kept voxel's centre).
        """
        declared = self._info.get("level_translations")
        if declared and level < len(declared):  # a foreign store: as its metadata says
            return np.array(declared[level], dtype=float)
        methods = list(self._info.get("methods") or [])
        origin = self.origin.copy()
        for k in range(1, level + 1):
            method = methods[k - 1] if k - 1 < len(methods) else "mean"
            if method != "nearest":
                step = self.factors(k) / self.factors(k - 1)
                origin += (step - 1) / 2 * self.level_voxel_size(k - 1)
        return origin

    # -- block grid -----------------------------------------------------------------
    def block_shape(self, level: int = 0) -> tuple[int, int, int]:
        """The write unit (z, y, x) of a level: one shard, or one chunk when unsharded."""
        arr = self[level]
        unit = arr.shards if arr.shards is not None else arr.chunks
        return (int(unit[-3]), int(unit[-2]), int(unit[-1]))

    def blocks(self, level: int = 0) -> list[Block]:
        """Indices of all write blocks of a level, in C order."""
        shape = self[level].shape[-3:]
        bs = self.block_shape(level)
        nz, ny, nx = (-(-s // b) for s, b in zip(shape, bs, strict=True))
        return list(itertools.product(range(nz), range(ny), range(nx)))

    def block_region(self, block: Block, level: int = 0) -> tuple[slice, slice, slice]:
        """Voxel region (z, y, x) of a block."""
        shape = self[level].shape[-3:]
        bs = self.block_shape(level)
        r = [slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(block, bs, shape, strict=True)]
        return (r[0], r[1], r[2])

    def write_block(self, region: Sequence[slice], data: ArrayLike, level: int = 0) -> None:
        """Write ``data`` to a (z, y, x) region of a level (all channels)."""
        arr = self[level]
        lead = (slice(None),) * (arr.ndim - 3)
        data = np.asarray(data)
        want = _region_shape(arr.shape, region)
        if data.shape != want:
            msg = (
                f"{self.path}/{level}: block {tuple(region)} needs data of shape {want}, "
                f"got {data.shape}"
            )
            raise ParameterError(msg)
        arr[(*lead, *region)] = data

    def write_array(
        self,
        data: Any,
        *,
        workers: int | None = None,
        client: Any = None,
        progress: bool = False,
    ) -> None:
        """Write a whole level-0 array block by block (each block one shard, once).

        Parameters
        ----------
        data : array_like
            Any sliceable array (numpy, memmap, zarr, dask) of level 0's shape;
            only one block per worker is in memory at a time.
        workers : int, optional
            Threads (default: available CPUs).
        client : distributed.Client, optional
            Run on a dask cluster (``data`` must then be picklable).
        progress : bool
            Show a progress bar.
        """
        if tuple(data.shape) != tuple(self[0].shape):
            msg = f"{self.path}: data shape {tuple(data.shape)} != level 0 shape {self[0].shape}"
            raise ParameterError(msg)
        task = _CopyTask(str(self.path), data)
        done = self.done_blocks(0)
        todo = [b for b in self.blocks(0) if b not in done]
        for _ in imap_unordered(
            task, todo, workers=workers, client=client, progress=progress, desc="level 0"
        ):
            pass

    def read(self, region: Sequence[slice] | None = None, level: int = 0) -> NDArray[Any]:
        """Read a (z, y, x) region of a level (all channels)."""
        arr = self[level]
        if region is None:
            return np.asarray(arr[...])
        lead = (slice(None),) * (arr.ndim - 3)
        return np.asarray(arr[(*lead, *region)])

    # -- resumable progress -----------------------------------------------------------
    def _progress_dir(self, level: int) -> Path:
        return self.path / _PROGRESS / str(level)

    def _block_counts(self, level: int) -> tuple[int, int, int]:
        shape, bs = self[level].shape[-3:], self.block_shape(level)
        n = [-(-int(s) // int(b)) for s, b in zip(shape, bs, strict=True)]
        return (n[0], n[1], n[2])

    def mark_done(self, block: Block, level: int = 0) -> None:
        """Record that a block of a level is fully written (8 bytes appended to a log).

        Each process appends to its own log (``<host>-<pid>.log``) with one
        ``O_APPEND`` write, so concurrent writers never interleave and a kill
        leaves at most a torn last record, which is ignored.
        """
        d = self._progress_dir(level)
        d.mkdir(parents=True, exist_ok=True)
        n = self._block_counts(level)
        index = (int(block[0]) * n[1] + int(block[1])) * n[2] + int(block[2])
        log = d / f"{socket.gethostname()}-{os.getpid()}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, int(index).to_bytes(8, "little"))
        finally:
            os.close(fd)

    def done_blocks(self, level: int = 0) -> set[Block]:
        """Blocks of a level recorded as written by `mark_done` (read once, O(blocks))."""
        d = self._progress_dir(level)
        if not d.is_dir():
            return set()
        n = self._block_counts(level)
        found: list[NDArray[np.int64]] = []
        out: set[Block] = set()
        for p in d.iterdir():
            if p.suffix == ".log":
                raw = p.read_bytes()
                raw = raw[: len(raw) // 8 * 8]  # a torn last record (killed mid-write)
                found.append(np.frombuffer(raw, dtype="<i8"))
            else:  # one marker file per block, as tilefuse < 0.2 recorded it
                parts = p.name.split(".")
                if len(parts) == 3 and all(x.isdigit() for x in parts):
                    out.add((int(parts[0]), int(parts[1]), int(parts[2])))
        if found:
            idx = np.unique(np.concatenate(found))
            idx = idx[(idx >= 0) & (idx < n[0] * n[1] * n[2])]
            z, y, x = np.unravel_index(idx, n)
            out.update(zip(z.tolist(), y.tolist(), x.tolist(), strict=True))
        return out

    def mark_complete(self) -> None:
        """Declare the store finished: drop progress markers, set ``status`` complete."""
        shutil.rmtree(self.path / _PROGRESS, ignore_errors=True)
        self._info["status"] = "complete"
        self._write_metadata()

    def set_attribute(self, key: str, value: Any) -> None:
        """Store a value under the group's ``tilefuse`` attributes."""
        self._info[key] = value
        self._write_metadata()

    def get_attribute(self, key: str, default: Any = None) -> Any:
        """Read a value stored with `set_attribute`."""
        return self._info.get(key, default)

    # -- levels -------------------------------------------------------------------------
    def _create_level(self, level: int, shape: tuple[int, ...]) -> zarr.Array:
        self._arrays.pop(level, None)
        info = self._info
        chunks = tuple(min(c, s) for c, s in zip(info["chunks"], shape[-3:], strict=True))
        lead = tuple(1 for _ in shape[:-3])
        kwargs: dict[str, Any] = {}
        if self.zarr_format == 3:
            kwargs["dimension_names"] = self.axis_names
            if info.get("shards"):
                shards = tuple(
                    min(sh, -(-s // c) * c)
                    for sh, s, c in zip(info["shards"], shape[-3:], chunks, strict=True)
                )
                kwargs["shards"] = (*shape[:-3], *shards)
            kwargs["compressors"] = _codecs(info["kind"], 3, info["compression"])
        else:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            comp = _codecs(info["kind"], 2, info["compression"])
            kwargs["compressors"] = [comp] if comp is not None else None
        return self.group.create_array(
            self._level_path(level),
            shape=shape,
            dtype=np.dtype(info["dtype"]),
            chunks=(*lead, *chunks),
            fill_value=0,
            overwrite=True,
            **kwargs,
        )

    def add_downsample_level(
        self,
        level: int | None = None,
        method: Literal["mean", "mode", "nearest"] | None = None,
        *,
        factors: Sequence[int] | None = None,
        workers: int | None = None,
        client: Any = None,
        progress: bool = False,
    ) -> zarr.Array:
        """Compute level ``level`` from level ``level - 1``, block by block.

        Parameters
        ----------
        level : int, optional
            The new level (default: the next one). Must be ``n_levels``, or an
            existing level to recompute it.
        method : {"mean", "mode", "nearest"}, optional
            Reduction; default ``mean`` for images and ``mode`` for labels
            (a nonzero label wins ties against background).
        factors : sequence of 3 ints, optional
            Downsampling (z, y, x); default halves y and x, and z unless the
            voxels are already at least twice as coarse in z.
        workers : int, optional
            Threads; each task reads its source region and writes one whole
            shard of the new level.
        client : distributed.Client, optional
            Run tasks on a dask cluster instead.
        progress : bool
            Show a progress bar.

        Returns
        -------
        zarr.Array
            The new level.
        """
        n = self.n_levels
        level = n if level is None else int(level)
        if not 1 <= level <= n:
            msg = f"can add level {n} (or recompute 1..{n - 1}); got level={level}"
            raise ParameterError(msg)
        method = method or ("mode" if self.kind == "label" else "mean")
        if method not in METHODS:
            msg = f"method must be one of {METHODS}, got {method!r}"
            raise ParameterError(msg)
        prev = self[level - 1]
        lf = list(self._info.get("level_factors", []))[: level - 1]
        planned = self._info.get("pyramid_factors") or []
        if factors is None and level - 1 < len(planned):  # labels follow their image's pyramid
            factors = planned[level - 1]
        if factors is None:
            factors = downsample_factors(prev.shape, self.level_voxel_size(level - 1).tolist())
        f = tuple(int(x) for x in factors)
        shape = (*prev.shape[:-3], *(-(-s // k) for s, k in zip(prev.shape[-3:], f, strict=True)))
        self._info["level_factors"] = [*lf, list(f)]
        self._info["methods"] = [*list(self._info.get("methods", []))[: level - 1], method]
        self._create_level(level, shape)
        task = _DownsampleTask(str(self.path), level, f, method)
        blocks = self.blocks(level)
        for _ in imap_unordered(
            task,
            blocks,
            workers=workers,
            client=client,
            progress=progress,
            desc=f"level {level}",
        ):
            pass
        if "levels_complete" in self._info:  # listed in the metadata only now, complete
            self._info["levels_complete"] = max(int(self._info["levels_complete"]), level + 1)
        self._write_metadata()
        return self[level]

    def build_pyramid(self, n_levels: int, method: str | None = None, **kwargs: Any) -> None:
        """Add downsampled levels until the store has ``n_levels`` levels."""
        while self.n_levels < n_levels:
            self.add_downsample_level(method=method, **kwargs)  # type: ignore[arg-type]

    def to_bdv(
        self,
        path: str | os.PathLike[str],
        *,
        levels: int | None = None,
        chunks: tuple[int, int, int] | None = None,
        compression: Literal["default", "fast", "archive", "gzip", "none"] = "default",
        overwrite: bool = False,
        format: Literal["hdf5", "n5"] = "hdf5",
        allow_incomplete: bool = False,
        workers: int | None = None,
        client: Any = None,
        progress: bool = False,
    ) -> tuple[Path, Path]:
        """Export level 0 to BigDataViewer HDF5 (or N5) + XML; each channel a setup.

        The options are `tilefuse.io.bdv.write_bdv`'s; ``allow_incomplete``
        exports a store an interrupted tilefuse write left unfinished (refused
        by default: `IncompleteStoreError`).
        """
        from tilefuse.io.bdv import group_to_bdv

        return group_to_bdv(
            self,
            path,
            levels=levels,
            chunks=chunks,
            compression=compression,
            overwrite=overwrite,
            format=format,
            allow_incomplete=allow_incomplete,
            workers=workers,
            client=client,
            progress=progress,
        )

    # -- labels -------------------------------------------------------------------------
    def create_labels(
        self, name: str, dtype: Any = np.uint32, *, overwrite: bool = False
    ) -> MultiScaleGroup:
        """Create a label image ``labels/<name>`` matching this image's level 0.

        The label image has the image's spatial shape, voxel size, origin,
        chunks and shards (a channel axis of size 1 if the image has
        channels). Fill it with `write_block`, then call `build_pyramid` with
        this image's `n_levels` (the spec requires equal level counts).
        """
        if self.kind == "label":
            msg = "labels belong to an image, not to another label image"
            raise ParameterError(msg)
        labels_path = self.path / "labels"
        if self.zarr_format == 3:
            lg = zarr.open_group(str(labels_path), mode="a", zarr_format=3)
            ome: dict[str, Any] = dict(lg.attrs.get("ome", {}))  # type: ignore[arg-type]
            names = list(ome.get("labels", []))
            ome.update(version="0.5", labels=[*dict.fromkeys([*names, name])])
            lg.attrs["ome"] = ome
        else:
            lg = zarr.open_group(str(labels_path), mode="a", zarr_format=2)
            names = list(lg.attrs.get("labels", []))  # type: ignore[arg-type]
            lg.attrs["labels"] = [*dict.fromkeys([*names, name])]
        shape = self[0].shape
        lshape = (1, *shape[-3:]) if len(shape) == 4 else shape[-3:]
        info = self._info
        labels = MultiScaleGroup.create(
            labels_path / name,
            shape=lshape,
            dtype=dtype,
            voxel_size=info["voxel_size"],
            origin=info["origin"],
            unit=info["unit"],
            name=name,
            channel_names=["labels"] if len(shape) == 4 else None,
            chunks=info["chunks"],
            shards=info.get("shards") or False,
            version=self.version,
            kind="label",
            overwrite=overwrite,
        )
        # the label pyramid downsamples as the image's does, level by level
        labels.set_attribute(
            "pyramid_factors", [self.step_factors(k) for k in range(1, self.n_levels)]
        )
        return labels

    def step_factors(self, level: int) -> list[int]:
        """Downsampling factors (z, y, x) from ``level - 1`` to ``level``.

        From the levels' voxel sizes (as the metadata declares them), checked
        against the array shapes; a store written by another tool may use any
        factors (ome-zarr-py halves only y and x by default).
        """
        if not 1 <= level < self.n_levels:
            msg = f"{self.path}: no level {level} (levels 0..{self.n_levels - 1})"
            raise SelectionError(msg)
        ratio = self.level_voxel_size(level) / self.level_voxel_size(level - 1)
        f = [max(round(float(r)), 1) for r in ratio]
        a, b = self[level - 1].shape[-3:], self[level].shape[-3:]
        if any(-(-n // k) != m for n, k, m in zip(a, f, b, strict=True)):
            f = [max(round(n / m), 1) for n, m in zip(a, b, strict=True)]
        return f

    @property
    def labels(self) -> list[str]:
        """Names of the label images listed in ``labels/``."""
        if "labels" not in self.group:
            return []
        attrs: dict[str, Any] = dict(self.group["labels"].attrs)
        lst = attrs.get("ome", {}).get("labels") if self.zarr_format == 3 else attrs.get("labels")
        return list(lst or [])

    def open_labels(self, name: str, mode: Literal["r", "r+"] = "r") -> MultiScaleGroup:
        """Open the label image ``labels/<name>``."""
        return MultiScaleGroup.open(self.path / "labels" / name, mode=mode)

    # -- metadata -------------------------------------------------------------------------
    @property
    def axis_names(self) -> list[str]:
        """Axis names in array order: ``z, y, x`` or ``c, z, y, x``."""
        return ["c", "z", "y", "x"] if self._info.get("channel_names") else ["z", "y", "x"]

    def _axes(self) -> list[dict[str, str]]:
        axes = [{"name": "c", "type": "channel"}] if self._info.get("channel_names") else []
        unit = self.unit
        axes += [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
        return axes

    def _multiscale(self) -> dict[str, Any]:
        has_c = bool(self._info.get("channel_names"))
        datasets = []
        for i in range(self.n_levels):
            scale = [float(v) for v in self.level_voxel_size(i)]
            trans = [float(v) for v in self.level_origin(i)]
            if has_c:
                scale, trans = [1.0, *scale], [0.0, *trans]
            datasets.append(
                {
                    "path": self._level_path(i),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": trans},
                    ],
                }
            )
        methods = self._info.get("methods") or ["mean" if self.kind == "image" else "mode"]
        ms: dict[str, Any] = {
            "name": self.name,
            "axes": self._axes(),
            "datasets": datasets,
            "type": methods[0] if len(set(methods)) == 1 else "mixed",
            "metadata": {
                "method": "tilefuse.pyramid.downsample",
                "methods": methods,
                "rounding": "half-up integer mean",
                "mode_ties": "nonzero beats background; then first in voxel order",
            },
        }
        if self.zarr_format == 2:
            ms["version"] = "0.4"
        return ms

    def _omero(self) -> dict[str, Any] | None:
        names = self._info.get("channel_names") or ([self.name] if self.kind == "image" else None)
        if not names:
            return None
        dt = np.dtype(self._info["dtype"])
        lo, hi = (
            (float(np.iinfo(dt).min), float(np.iinfo(dt).max))
            if np.issubdtype(dt, np.integer)
            else (0.0, 1.0)
        )
        window = self._info.get("window") or [lo, hi]
        # one [start, end] for every channel, or one pair per channel
        windows = window if np.ndim(window) == 2 else [window] * len(names)
        return {
            "name": self.name,
            "channels": [
                {
                    "label": str(n),
                    "color": _COLORS[i % len(_COLORS)] if len(names) > 1 else "FFFFFF",
                    "active": True,
                    "window": {
                        "min": lo,
                        "max": hi,
                        "start": windows[i][0],
                        "end": windows[i][1],
                    },
                }
                for i, n in enumerate(names)
            ],
        }

    def _write_metadata(self) -> None:
        ms = self._multiscale()
        extra: dict[str, Any] = {}
        if self.kind == "image":
            omero = self._omero()
            if omero:
                extra["omero"] = omero
        else:
            # a label image inside an image's labels/ group points back at it
            inside = self.path.parent.name == "labels"
            label: dict[str, Any] = {"source": {"image": "../../"}} if inside else {}
            if self.zarr_format == 2:
                label["version"] = "0.4"
            extra["image-label"] = label
        attrs = dict(self.group.attrs)
        if self.zarr_format == 3:
            attrs["ome"] = {"version": "0.5", "multiscales": [ms], **extra}
        else:
            attrs.update({"multiscales": [ms], **extra})
        attrs["tilefuse"] = self._info
        self.group.attrs.put(attrs)

    def __repr__(self) -> str:
        shapes = [tuple(a.shape) for a in self.levels]
        return f"MultiScaleGroup({str(self.path)!r}, version={self.version}, levels={shapes})"


class _StoreTask:
    """Base of picklable store tasks: opens the group once per process, lazily."""

    path: str
    _group: MultiScaleGroup | None = None

    def group(self) -> MultiScaleGroup:
        if self._group is None:
            self._group = MultiScaleGroup.open(self.path, mode="r+")
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_group"}


class _CopyTask(_StoreTask):
    """Picklable task: copy one level-0 block from an array into the store."""

    def __init__(self, path: str, data: Any) -> None:
        self.path, self.data = path, data

    def __call__(self, block: Block) -> None:
        group = self.group()
        region = group.block_region(block, 0)
        lead = (slice(None),) * (self.data.ndim - 3)
        group.write_block(region, np.asarray(self.data[(*lead, *region)]), 0)
        group.mark_done(block, 0)


class _DownsampleTask(_StoreTask):
    """Picklable task: compute one block (shard) of ``level`` from ``level - 1``.

    The shard is filled chunk by chunk, each from just its source region, so a
    task holds one output shard plus one source region of a chunk, never the
    eight source shards at once.
    """

    def __init__(self, path: str, level: int, factors: tuple[int, ...], method: str) -> None:
        self.path, self.level, self.factors, self.method = path, level, factors, method

    def __call__(self, block: Block) -> None:
        group = self.group()
        arr = group[self.level]
        region = group.block_region(block, self.level)
        out = np.empty(_region_shape(arr.shape, region), dtype=arr.dtype)
        step = arr.chunks[-3:]
        starts = [range(r.start, r.stop, c) for r, c in zip(region, step, strict=True)]
        for z0, y0, x0 in itertools.product(*starts):
            sub = [
                slice(a, min(a + c, r.stop))
                for a, c, r in zip((z0, y0, x0), step, region, strict=True)
            ]
            src = tuple(
                slice(r.start * f, r.stop * f) for r, f in zip(sub, self.factors, strict=True)
            )
            data = group.read(src, level=self.level - 1)
            rel = tuple(
                slice(r.start - o.start, r.stop - o.start) for r, o in zip(sub, region, strict=True)
            )
            out[(..., *rel)] = downsample(data, self.factors, self.method)  # type: ignore[arg-type,index]
        group.write_block(region, out, self.level)


def _region_shape(shape: Sequence[int], region: Sequence[slice]) -> tuple[int, ...]:
    """Shape of ``array[..., region]`` for an array of ``shape``."""
    sp = [len(range(*r.indices(n))) for r, n in zip(region, shape[-3:], strict=True)]
    return (*shape[:-3], *sp)


def _prepare_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless asked; never delete a folder that is not zarr."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        msg = f"output exists: {path} (pass overwrite=True to replace it)"
        raise OutputExistsError(msg)
    is_zarr = path.is_dir() and any(
        (path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray")
    )
    if not is_zarr:
        msg = f"refusing to overwrite {path}: it exists and is not a zarr store"
        raise StoreError(msg)
    shutil.rmtree(path)


def _info_from_multiscales(ms: dict[str, Any], ome: dict[str, Any], path: Path) -> dict[str, Any]:
    """Derive tilefuse's view of a store written by another tool."""
    try:
        axes = [a["name"] for a in ms["axes"]]
        ds0 = ms["datasets"][0]
        scale = next(t["scale"] for t in ds0["coordinateTransformations"] if t["type"] == "scale")
        trans = next(
            (
                t["translation"]
                for t in ds0["coordinateTransformations"]
                if t["type"] == "translation"
            ),
            [0.0] * len(axes),
        )
        sp = [axes.index(a) for a in "zyx" if a in axes]
        units = [a.get("unit") for a in ms["axes"] if a.get("type") == "space"]
        paths = [str(ds["path"]) for ds in ms["datasets"]]
    except (KeyError, StopIteration, ValueError) as e:
        msg = f"{path}: malformed 'multiscales' metadata ({e})"
        raise StoreError(msg) from e
    vs = [1.0] * (3 - len(sp)) + [float(scale[i]) for i in sp]
    org = [0.0] * (3 - len(sp)) + [float(trans[i]) for i in sp]
    scales, translations = [], []
    for ds in ms["datasets"]:
        ct = ds.get("coordinateTransformations", [])
        sc = next((t["scale"] for t in ct if t.get("type") == "scale"), None)
        tr = next((t["translation"] for t in ct if t.get("type") == "translation"), None)
        if sc is None:
            break
        tr = tr if tr is not None else [0.0] * len(axes)
        scales.append([1.0] * (3 - len(sp)) + [float(sc[i]) for i in sp])
        translations.append([0.0] * (3 - len(sp)) + [float(tr[i]) for i in sp])
    return {
        "kind": "label" if "image-label" in ome else "image",
        "status": "complete",
        "voxel_size": vs,
        "origin": org,
        "level_scales": scales,
        "level_translations": translations,
        "unit": units[0] if units and units[0] else None,  # no unit: not micrometres
        "name": ms.get("name", path.name),
        "channel_names": None,
        "level_paths": paths,
        "compression": "default",
        "methods": [],
    }
