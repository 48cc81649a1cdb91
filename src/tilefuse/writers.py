"""Block writers: where fused blocks go (in memory, OME-Zarr, BigDataViewer HDF5).

The fusion engine (`tilefuse.fuse.fuse_tiles`) knows only the `BlockWriter`
interface:

1. `BlockWriter.begin` with a `VolumeSpec` (shape, dtype, grid, plan
   fingerprint): the writer creates its output, or reopens an interrupted one
   of the same plan (resume);
2. `BlockWriter.grid`: the block grid, aligned to the writer's storage unit
   (a shard or chunk), so every block is written exactly once by one task;
3. `BlockWriter.pending_blocks`: the blocks still to write (all of them,
   unless the writer resumes);
4. `BlockWriter.write_block` for each rendered block: in the worker tasks
   when `BlockWriter.parallel_writes` is true (the writer must then be
   picklable for a dask client), otherwise in the calling process as blocks
   arrive;
5. `BlockWriter.finish` (pyramid levels, metadata, atomic rename) returns the
   result; `BlockWriter.abort` runs instead when the fusion fails.

A new output format is one `BlockWriter` subclass.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from tilefuse.errors import (
    IncompleteStoreError,
    OutputExistsError,
    ResumeMismatchError,
    StateError,
    StoreError,
)
from tilefuse.io.bdv import BdvHdf5Writer, BdvN5Writer, BdvView, bdv_writer
from tilefuse.io.ome_zarr import MultiScaleGroup, default_chunks
from tilefuse.io.outputs import StoreLock, recover_swap, staging_path, swap_into_place
from tilefuse.options import ExecOptions, OutputOptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "BdvWriter",
    "BlockGrid",
    "BlockWriter",
    "MemoryWriter",
    "OmeZarrLabelsWriter",
    "OmeZarrWriter",
    "VolumeSpec",
]

logger = logging.getLogger(__name__)

Block = tuple[int, int, int]
Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class VolumeSpec:
    """What a writer needs to know about the volume it will receive.

    Attributes
    ----------
    shape : tuple of 4 ints
        ``(c, z, y, x)``; blocks arrive as ``(c, z, y, x)`` arrays.
    dtype : numpy.dtype
        Pixel type of the blocks.
    origin, voxel_size : tuple of 3 floats
        The grid: world position (z, y, x) of voxel 0 and the voxel size, micrometres.
    channel_names : tuple of str, optional
        One per channel when there are several.
    unit : str or None
        Spatial unit of ``origin`` / ``voxel_size`` (``None``: unitless pixels,
        e.g. tiles from a project whose voxel size has no unit).
    fingerprint : str
        A hash of everything that determines the pixels (for resuming).
    fingerprint_parts : dict of str to str
        The same, one digest per named part (so a mismatch can say what changed).
    """

    shape: tuple[int, int, int, int]
    dtype: np.dtype[Any]
    origin: tuple[float, float, float]
    voxel_size: tuple[float, float, float]
    channel_names: tuple[str, ...] | None = None
    fingerprint: str = ""
    unit: str | None = "micrometer"
    fingerprint_parts: dict[str, str] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(z, y, x)``."""
        return (self.shape[1], self.shape[2], self.shape[3])


@dataclass(frozen=True)
class BlockGrid:
    """Output blocks: ``shape`` (z, y, x) cut into ``block_shape`` pieces (C order)."""

    shape: tuple[int, int, int]
    block_shape: tuple[int, int, int]

    def blocks(self) -> list[Block]:
        """Indices of every block, in C order."""
        n = [-(-s // b) for s, b in zip(self.shape, self.block_shape, strict=True)]
        return list(itertools.product(range(n[0]), range(n[1]), range(n[2])))

    def region(self, block: Block) -> Region:
        """Voxel region (z, y, x) of a block (clipped at the far edges)."""
        r = [
            slice(i * b, min((i + 1) * b, s))
            for i, b, s in zip(block, self.block_shape, self.shape, strict=True)
        ]
        return (r[0], r[1], r[2])


class BlockWriter:
    """Base of the block writers; see the module docstring for the protocol."""

    #: True: `write_block` may run in worker tasks, concurrently for distinct blocks.
    parallel_writes: ClassVar[bool] = False

    def begin(self, spec: VolumeSpec) -> None:
        """Create the output for ``spec`` (or reopen an interrupted one); sets `grid`."""
        raise NotImplementedError

    @property
    def grid(self) -> BlockGrid:
        """The block grid (available after `begin`)."""
        grid: BlockGrid | None = getattr(self, "_grid", None)
        if grid is None:
            msg = f"{type(self).__name__}: call begin() first"
            raise StateError(msg)
        return grid

    def pending_blocks(self) -> list[Block]:
        """Blocks still to write (default: all)."""
        return self.grid.blocks()

    def write_block(self, block: Block, data: NDArray[Any]) -> None:
        """Store one rendered ``(c, z, y, x)`` block and record it as written."""
        raise NotImplementedError

    def finish(self, execution: ExecOptions) -> Any:
        """Complete the output (pyramid, metadata) and return the result."""
        raise NotImplementedError

    def abort(self) -> None:
        """Called instead of `finish` when the fusion fails (default: nothing)."""


def memory_block_shape(
    shape: Sequence[int], chunks: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """Work block of an in-memory fusion: ``chunks`` or up to 64 x 512 x 512."""
    bs = chunks or tuple(min(s, b) for s, b in zip(shape, (64, 512, 512), strict=True))
    return (int(bs[0]), int(bs[1]), int(bs[2]))


class MemoryWriter(BlockWriter):
    """Collect the blocks into one numpy array.

    Parameters
    ----------
    options : OutputOptions, optional
        Only ``chunks`` applies: the work block (default up to 64 x 512 x 512).
    """

    def __init__(self, options: OutputOptions | None = None) -> None:
        self.options = options or OutputOptions()
        self._out: NDArray[Any] | None = None

    def begin(self, spec: VolumeSpec) -> None:
        """Allocate the output array."""
        self._out = np.zeros(spec.shape, dtype=spec.dtype)
        bs = memory_block_shape(spec.spatial_shape, self.options.chunks)
        self._grid = BlockGrid(spec.spatial_shape, bs)

    def write_block(self, block: Block, data: NDArray[Any]) -> None:
        """Copy a block into the array."""
        assert self._out is not None
        self._out[(slice(None), *self.grid.region(block))] = data

    def finish(self, execution: ExecOptions) -> NDArray[Any]:
        """``(z, y, x)`` for one channel, else ``(c, z, y, x)``."""
        assert self._out is not None
        out, self._out = self._out, None
        return out[0] if out.shape[0] == 1 else out


class OmeZarrWriter(BlockWriter):
    """Write into a new OME-Zarr store (`MultiScaleGroup`), one shard per block, resumably.

    Blocks are written by the worker tasks themselves (in parallel, each to
    its own shard) and recorded as done; an interrupted store of the same
    plan (same fingerprint) is resumed, skipping the blocks already written.

    Parameters
    ----------
    path : str or PathLike
        The store folder.
    options : OutputOptions, optional
        Levels (default 1), chunks, shards, version, compression, name, overwrite.
    kind : {"image", "label"}
        Label images get ``image-label`` metadata and mode downsampling.
    """

    parallel_writes = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: OutputOptions | None = None,
        *,
        kind: Literal["image", "label"] = "image",
    ) -> None:
        self.path = Path(path)
        self.options = options or OutputOptions()
        self.kind = kind
        self._group: MultiScaleGroup | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_group"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _group=None)

    @property
    def lock_target(self) -> Path:
        """The path whose `StoreLock` guards this write."""
        return self.path

    @property
    def store_path(self) -> Path:
        """Where the blocks go: ``path``, or a staging store beside it for ``overwrite``."""
        return getattr(self, "_store_path", None) or self.path

    @property
    def group(self) -> MultiScaleGroup:
        """The store (reopened lazily in a worker process)."""
        if self._group is None:
            self._group = MultiScaleGroup.open(self.store_path, mode="r+")
        return self._group

    def begin(self, spec: VolumeSpec) -> None:
        """Lock the output, then resume an interrupted store of the same plan or create one."""
        self._lock: StoreLock | None = StoreLock(self.lock_target).acquire()
        try:
            group = self._resume_or_create(spec)
            if tuple(group[0].shape[-3:]) != spec.spatial_shape:
                msg = f"{group.path}: level 0 is {group[0].shape}, the fusion grid is {spec.shape}"
                raise StoreError(msg)
        except BaseException:
            self._release()
            raise
        self._group = group
        self._grid = BlockGrid(spec.spatial_shape, group.block_shape(0))

    def _layout(self, spec: VolumeSpec) -> dict[str, Any]:
        """The output settings the stored pixels depend on (part of the fingerprint)."""
        o = self.options
        return {
            "chunks": list(o.chunks or default_chunks(spec.spatial_shape, spec.dtype)),
            "shards": o.shards if isinstance(o.shards, bool) else list(o.shards),
            "version": o.version,
            "compression": o.compression,
            "kind": self.kind,
        }

    def _fingerprint(self, spec: VolumeSpec) -> tuple[str, dict[str, str]]:
        """The spec's fingerprint parts plus this writer's layout, and their hash."""
        parts = dict(spec.fingerprint_parts) or {"plan": spec.fingerprint}
        for key, value in self._layout(spec).items():
            parts[f"output {key}"] = json.dumps(value, sort_keys=True)
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts

    def _check_resume(self, group: MultiScaleGroup, spec: VolumeSpec) -> None:
        """Refuse to resume a store started with other inputs, settings or fewer levels."""
        fp, parts = self._fingerprint(spec)
        if group.get_attribute("fingerprint") != fp:
            old = group.get_attribute("fingerprint_parts") or {}
            changed = sorted(k for k in {*old, *parts} if old.get(k) != parts.get(k))
            what = ", ".join(changed) if old else "tiles or settings (written by another version)"
            msg = (
                f"{group.path} holds an unfinished fusion of other inputs or settings "
                f"(changed: {what}); rerun with the original ones to resume it, or pass "
                "overwrite=True (--overwrite) to replace it"
            )
            raise ResumeMismatchError(msg)
        started = int(group.get_attribute("levels_requested") or 1)
        levels = self.options.levels or self.default_levels()
        if levels < started:
            msg = (
                f"{group.path}: the unfinished fusion was started with {started} levels, this run "
                f"asks for {levels}; resume with at least {started} (more levels extend it), or "
                "pass overwrite=True (--overwrite)"
            )
            raise ResumeMismatchError(msg)

    def _resume_or_create(self, spec: VolumeSpec) -> MultiScaleGroup:
        target, opts = self.path, self.options
        recover_swap(target, _is_complete_store)
        _remove_unborn(target)
        path = target
        if opts.overwrite and target.exists():
            if not _is_zarr_dir(target):
                msg = f"refusing to overwrite {target}: it exists and is not a zarr store"
                raise StoreError(msg)
            # the replacement is built beside the old store and swapped in once complete
            path = staging_path(target)
            self._store_path = path
            _remove_unborn(path)
        if path.exists() and (path != target or not opts.overwrite):
            try:
                group = MultiScaleGroup.open(path, mode="r+")
            except StoreError:
                group = None
            if group is not None and not group.is_complete:
                if path != target:  # a staged replacement: resume it only if it is this plan
                    try:
                        self._check_resume(group, spec)
                    except ResumeMismatchError:
                        shutil.rmtree(path)
                        return self._create(path, spec)
                else:
                    self._check_resume(group, spec)
                self._record_levels(group)
                return group
        if path.exists():
            if path == target:
                msg = f"output exists: {target} (pass overwrite=True to replace it)"
                raise OutputExistsError(msg)
            shutil.rmtree(path)  # a finished staging store nobody swapped in: start over
        return self._create(path, spec)

    def _record_levels(self, group: MultiScaleGroup) -> None:
        levels = self.options.levels or self.default_levels()
        if int(group.get_attribute("levels_requested") or 1) != levels:
            group.set_attribute("levels_requested", levels)

    def _create(self, path: Path, spec: VolumeSpec) -> MultiScaleGroup:
        """Create the store complete with its fingerprint in a folder beside, then rename it.

        A kill at any moment leaves either no store or one that knows what it
        is a fusion of (never a store without its fingerprint).
        """
        opts, c = self.options, spec.shape[0]
        fp, parts = self._fingerprint(spec)
        unborn = path.with_name(f"{path.name}{_UNBORN}{os.getpid()}")
        group = MultiScaleGroup.create(
            unborn,
            shape=spec.shape if c > 1 else spec.spatial_shape,
            dtype=spec.dtype,
            voxel_size=spec.voxel_size,
            origin=spec.origin,
            unit=spec.unit,
            chunks=opts.chunks or default_chunks(spec.spatial_shape, spec.dtype),
            shards=opts.shards,
            version=opts.version,
            compression=opts.compression,
            name=opts.name or path.name.split(".")[0],
            channel_names=list(spec.channel_names) if c > 1 and spec.channel_names else None,
            kind=self.kind,
            overwrite=True,
        )
        group._info.update(
            fingerprint=fp,
            fingerprint_parts=parts,
            levels_requested=opts.levels or self.default_levels(),
        )
        group._write_metadata()
        os.rename(unborn, path)
        return MultiScaleGroup.open(path, mode="r+")

    def pending_blocks(self) -> list[Block]:
        """Every level-0 block not recorded as done by an interrupted run (done set read once)."""
        blocks = self.grid.blocks()
        done = self.group.done_blocks(0)
        todo = [b for b in blocks if b not in done]
        if len(todo) < len(blocks):
            logger.info("resuming %s: %d of %d blocks left", self.path, len(todo), len(blocks))
        return todo

    def write_block(self, block: Block, data: NDArray[Any]) -> None:
        """Write one block (one shard) of level 0 and its progress record."""
        group = self.group
        region = self.grid.region(block)
        group.write_block(region, data[0] if group[0].ndim == 3 else data, 0)
        group.mark_done(block, 0)

    def default_levels(self) -> int:
        """Levels written when `OutputOptions.levels` is None."""
        return 1

    def finish(self, execution: ExecOptions) -> MultiScaleGroup:
        """Build the missing pyramid levels, mark the store complete, swap it in, return it."""
        try:
            group = self.group
            levels = self.options.levels or self.default_levels()
            group.set_levels_complete(max(1, min(group.n_levels, levels)))
            group.drop_levels_from(group.n_levels)  # a level an interrupted run left half done
            for lvl in range(group.n_levels, levels):
                group.add_downsample_level(
                    lvl,
                    workers=execution.workers,
                    client=execution.client,
                    progress=execution.progress,
                )
            group.mark_complete()
            if self.store_path != self.path:
                swap_into_place(self.store_path, self.path)
                self._group = group = MultiScaleGroup.open(self.path, mode="r+")
            return group
        finally:
            self._release()

    def abort(self) -> None:
        """Release the lock; the store stays resumable."""
        self._release()

    def _release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None


_UNBORN = ".tilefuse-init-"


def _remove_unborn(path: Path) -> None:
    """Remove stores a killed run left half-created beside ``path`` (call with the lock held)."""
    for p in path.parent.glob(f"{path.name}{_UNBORN}*"):
        shutil.rmtree(p, ignore_errors=True)


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zgroup"))


def _is_complete_store(path: Path) -> bool:
    try:
        return MultiScaleGroup.open(path).is_complete
    except StoreError:
        return False


class OmeZarrLabelsWriter(OmeZarrWriter):
    """Write a label image into ``labels/<name>`` of an existing OME-Zarr image.

    The labels take the image's grid, chunks and shards, and by default as
    many levels as the image. An interrupted write of the same plan is
    resumed; finished labels are replaced only with ``overwrite``.

    Parameters
    ----------
    image : MultiScaleGroup
        The image (opened ``r+``).
    name : str
        Label image name inside ``labels/``.
    options : OutputOptions, optional
        ``levels`` and ``overwrite`` apply (the rest comes from the image).
    """

    def __init__(
        self, image: MultiScaleGroup, name: str, options: OutputOptions | None = None
    ) -> None:
        super().__init__(image.path / "labels" / name, options, kind="label")
        self.image_path, self.name, self.image_levels = image.path, name, image.n_levels
        self._image: MultiScaleGroup | None = image

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_image": None}

    @property
    def lock_target(self) -> Path:
        """Labels lock their image: one writer per store."""
        return self.image_path

    def _resume_or_create(self, spec: VolumeSpec) -> MultiScaleGroup:
        path, opts = self.path, self.options
        image = self._image or MultiScaleGroup.open(self.image_path, mode="r+")
        if not image.is_complete:
            msg = f"{self.image_path} is an unfinished fusion: finish (resume) it before labels"
            raise IncompleteStoreError(msg)
        if path.exists() and not opts.overwrite:
            group = MultiScaleGroup.open(path, mode="r+")
            if group.is_complete:
                msg = f"labels exist: {path} (pass overwrite=True to replace them)"
                raise OutputExistsError(msg)
            if group.get_attribute("fingerprint") is not None:
                self._check_resume(group, spec)
                self._record_levels(group)
                return group
            # created by a run killed before it recorded its fingerprint: nothing written yet
        group = image.create_labels(self.name, dtype=spec.dtype, overwrite=True)
        fp, parts = self._fingerprint(spec)
        group._info.update(
            fingerprint=fp,
            fingerprint_parts=parts,
            levels_requested=opts.levels or self.default_levels(),
        )
        group._write_metadata()
        return group

    def default_levels(self) -> int:
        """The image's level count (the spec requires equal level counts)."""
        return self.image_levels


class BdvWriter(BlockWriter):
    """Write the fused volume straight into BigDataViewer HDF5 + XML.

    Each channel becomes a setup (channel attribute ``c``). Blocks are
    aligned to the HDF5 chunks and written by the calling process as workers
    finish rendering them (HDF5 is written from one thread); the pyramid
    (BigDataViewer's proposal, mean for images and mode for labels) is
    computed from level 0 by `finish`. Everything goes into a temporary
    ``.h5.partial`` renamed into place at the end, so a failed run leaves no
    file that looks complete (and is not resumed).

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` file (the ``.xml`` goes beside it).
    options : OutputOptions, optional
        ``levels`` (a cap), ``chunks`` (HDF5 chunk), ``compression`` (gzip
        level), ``name`` (setup name of a single channel, default
        ``"fused"``) and ``overwrite`` apply.
    kind : {"image", "label"}
        Labels are downsampled by mode.
    block : tuple of 3 ints
        Work block (z, y, x), rounded to whole HDF5 chunks.
    format : {"hdf5", "n5"}
        ``"n5"``: a BigDataViewer N5 container (`tilefuse.io.bdv.BdvN5Writer`;
        one file per chunk, needs ``tilefuse[n5]``) instead of HDF5.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        options: OutputOptions | None = None,
        *,
        kind: Literal["image", "label"] = "image",
        block: tuple[int, int, int] = (64, 512, 512),
        format: Literal["hdf5", "n5"] = "hdf5",
    ) -> None:
        self.path = Path(path)
        self.options = options or OutputOptions()
        self.kind: Literal["image", "label"] = kind
        self.block = block
        self.format: Literal["hdf5", "n5"] = format
        self._file: BdvHdf5Writer | BdvN5Writer | None = None

    def begin(self, spec: VolumeSpec) -> None:
        """Create the temporary HDF5 file with one setup per channel."""
        opts = self.options
        c = spec.shape[0]
        names = (
            list(spec.channel_names)
            if c > 1 and spec.channel_names
            else ([opts.name or "fused"] if c == 1 else [f"ch{i}" for i in range(c)])
        )
        views = [
            BdvView.placeholder(
                spec.spatial_shape,
                spec.dtype,
                spec.voxel_size,
                spec.origin,
                name=str(names[i]),
                channel=i,
                kind=self.kind,
            )
            for i in range(c)
        ]
        self._file = bdv_writer(
            self.path,
            views,
            format=self.format,
            levels=opts.levels,
            chunks=opts.chunks,
            compression=opts.compression,
            overwrite=opts.overwrite,
        )
        chunks = self._file.chunks(0)
        bs = tuple(max(ch, (b // ch) * ch) for b, ch in zip(self.block, chunks, strict=True))
        self._grid = BlockGrid(spec.spatial_shape, (bs[0], bs[1], bs[2]))

    def write_block(self, block: Block, data: NDArray[Any]) -> None:
        """Write every channel of a block to its setup's level 0."""
        assert self._file is not None
        region = self.grid.region(block)
        for ch in range(data.shape[0]):
            self._file.write(ch, region, data[ch])

    def finish(self, execution: ExecOptions) -> tuple[Path, Path]:
        """Build the pyramids, rename the file into place, write the XML; returns (h5, xml)."""
        assert self._file is not None
        return self._file.close(block=self.block)

    def abort(self) -> None:
        """Remove the temporary file."""
        if self._file is not None:
            self._file.abort()
