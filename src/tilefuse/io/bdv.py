"""BigDataViewer HDF5 (+ SpimData XML) export.

Layout and rules follow ``shared/formats/BDV-BIGSTITCHER.md`` (section 2 and
the checklist in section 6):

- ``/sNN/resolutions`` float64 (levels, 3) and ``/sNN/subdivisions`` int32
  (levels, 3), both **XYZ**; ``/tNNNNN/sNN/L/cells`` (Z, Y, X) datasets,
  chunked with ``subdivisions`` reversed, gzip-compressed;
- uint16 is stored as an int16 dataset holding the uint16 bit pattern and no
  ``dataType`` attribute (the layout every BigDataViewer / BigStitcher version
  reads); other types are stored natively with a fixed-length ASCII
  ``dataType`` attribute on ``/sNN`` (read by bdv-core >= 10.4.6);
- levels follow BigDataViewer's ``ProposeMipmaps`` (cumulative factors,
  power-of-two blocks of at most 4096 voxels), sizes ``ceil(n / r)``,
  block-averaged (mean for images, mode for labels), centred like BDV's
  ``getMipmapTransformDefault``;
- the XML: ``<SpimData version="0.2">``, ``bdv.hdf5`` image loader with a
  relative path, ViewSetups with size / voxelSize / the four standard
  attributes, a range of timepoints, one calibration ViewTransform per view.

Everything is written block by block (memory: one block), into a temporary
file renamed into place when complete.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import signal
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import IncompleteStoreError, OutputExistsError, ParameterError, WriteError
from tilefuse.io.outputs import StoreLock
from tilefuse.parallel import imap_unordered
from tilefuse.pyramid import downsample

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BdvHdf5Writer",
    "BdvN5Writer",
    "BdvView",
    "bdv_writer",
    "group_to_bdv",
    "propose_mipmaps",
    "write_bdv",
]

logger = logging.getLogger(__name__)

#: dtypes BigDataViewer reads (N5 DataType names); uint16 gets the legacy int16 layout
_BDV_TYPES = {
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
}


def _java_int(x: float) -> int:
    """Java's ``(int)`` cast of a double: truncation toward zero, NaN -> 0, saturating."""
    if math.isnan(x):
        return 0
    if math.isinf(x):
        return -(2**31) if x < 0 else 2**31 - 1
    return max(-(2**31), min(2**31 - 1, int(x)))


def _pot_block(
    voxel_scale: Sequence[float], size: Sequence[int] | None, max_elements: int = 4096
) -> list[int]:
    """BDV's ``ProposeMipmaps.suggestPoTBlockSize`` (x, y, z), ported step by step.

    Power-of-two sides, at most ``max_elements`` voxels, roughly cubic in world
    space. Real-valued bits per axis are rounded down, then bits are added one
    at a time to the axis with the largest fractional remainder plus a bias of
    ``0.01 * (3 - d)`` (so x wins a tie over y, y over z); an axis whose bits
    already cover the image size is skipped (if all are, x grows).
    """
    n = len(voxel_scale)
    bias = [0.01 * (n - d) for d in range(n)]
    shape = [1 / v for v in voxel_scale]
    shape_vol = 1.0
    for v in shape:
        shape_vol *= v
    m = math.pow(max_elements / shape_vol, 1.0 / n)
    sum_num_bits = math.log(max_elements) / math.log(2)
    num_bits = [math.log(m * shape[d]) / math.log(2) for d in range(n)]
    int_bits = [max(0, _java_int(b)) for b in num_bits]
    full_bits = [0] * n
    if size is not None:
        full_bits = [
            max(0, _java_int(math.log(s - 1) / math.log(2) if s > 1 else -math.inf) + 1)
            for s in size
        ]
        int_bits = [min(b, f) for b, f in zip(int_bits, full_bits, strict=True)]
    total = sum(int_bits)
    while total + 1 <= sum_num_bits:
        max_diff, max_dim = -math.inf, 0
        for d in range(n):
            if size is not None and int_bits[d] >= full_bits[d]:
                continue
            diff = num_bits[d] - int_bits[d] + bias[d]
            if diff > max_diff:
                max_diff, max_dim = diff, d
        int_bits[max_dim] += 1
        total += 1
    return [1 << b for b in int_bits]


def propose_mipmaps(
    size_xyz: Sequence[int], voxel_size_xyz: Sequence[float], max_elements: int = 4096
) -> tuple[list[list[int]], list[list[int]]]:
    """BigDataViewer's ``ProposeMipmaps.proposeMipmaps``: resolutions and subdivisions (XYZ).

    A port of bdv-core's ``bdv.export.ProposeMipmaps`` (same arithmetic, same
    order, same tie rule): levels halve the axes whose normalised voxel size
    is at most 2 until the largest side is at most 256; each level gets a
    power-of-two block of at most ``max_elements`` voxels.

    Parameters
    ----------
    size_xyz : sequence of 3 ints
        Level-0 image size, **x, y, z** (as BigDataViewer).
    voxel_size_xyz : sequence of 3 floats
        Voxel size, x, y, z (any unit).
    max_elements : int
        Block size limit (BigDataViewer: 4096).

    Returns
    -------
    (list, list)
        Per level: cumulative subsampling factors and block size, both x, y, z.
    """
    scale = [float(v) for v in voxel_size_xyz]

    def normalise() -> None:
        lo = min(scale)
        for d in range(3):
            scale[d] /= lo

    normalise()
    res = [1, 1, 1]
    resolutions: list[list[int]] = []
    subdivisions: list[list[int]] = []
    while True:
        resolutions.append(list(res))
        size = [max(1, int(s) // r) for s, r in zip(size_xyz, res, strict=True)]
        subdivisions.append(_pot_block(scale, size, max_elements))
        if max(size) <= 256:
            break
        changed = False
        for d in range(3):
            if scale[d] <= 2.0 and size[d] > 1:
                res[d] *= 2
                scale[d] *= 2
                changed = True
        if not changed:
            res = [r * 2 for r in res]
        normalise()
    return resolutions, subdivisions


@dataclass
class BdvView:
    """One view to export: a (z, y, x) array-like (read block by block) and its metadata.

    Attributes
    ----------
    data : array_like
        ``(z, y, x)``; anything sliceable (numpy, zarr, a `MultiScaleGroup` level).
    voxel_size : tuple of 3 floats
        (z, y, x) micrometres.
    origin : tuple of 3 floats
        World position (z, y, x) of voxel 0, micrometres.
    name : str
        ViewSetup name.
    channel, tile : int
        Attribute ids of the view.
    kind : {"image", "label"}
        Labels are downsampled by mode (background never wins a tie).
    """

    data: Any
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    name: str = "fused"
    channel: int = 0
    tile: int = 0
    kind: Literal["image", "label"] = "image"

    @classmethod
    def placeholder(
        cls,
        shape: Sequence[int],
        dtype: Any,
        voxel_size: tuple[float, float, float],
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        **attrs: Any,
    ) -> BdvView:
        """A view whose pixels arrive later through `BdvHdf5Writer.write` (shape and dtype only).

        ``attrs`` are the other fields (``name``, ``channel``, ``tile``, ``kind``).
        """
        return cls(_Shape(shape, dtype), voxel_size, origin, **attrs)


def write_bdv(
    path: str | os.PathLike[str],
    views: Sequence[BdvView],
    *,
    levels: int | None = None,
    chunks: tuple[int, int, int] | None = None,
    block: tuple[int, int, int] = (64, 512, 512),
    compression: Literal["default", "fast", "archive", "gzip", "none"] = "default",
    overwrite: bool = False,
    format: Literal["hdf5", "n5"] = "hdf5",
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Write views as a BigDataViewer HDF5 file (or N5 container) plus its SpimData XML.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` file (``format="n5"``: the ``.n5`` folder); the XML is
        written next to it (``.xml``).
    views : sequence of BdvView
        One setup each (setup ids 0, 1, ...), all at timepoint 0.
    levels : int, optional
        Cap on the number of pyramid levels (default: all BDV proposes).
    chunks : tuple of 3 ints, optional
        HDF5 chunk (z, y, x) for every level (written as ``subdivisions``);
        default: BigDataViewer's proposal (power-of-two blocks of <= 4096
        voxels, best for viewing; larger chunks write faster).
    block : tuple of 3 ints
        Work block (z, y, x): memory is about one block.
    compression : {"default", "fast", "archive", "gzip", "none"}
        HDF5 filter: gzip with byte shuffle (readable by every HDF5 client) at
        level 4 (``"default"``, also ``"gzip"``), 1 (``"fast"``) or 9
        (``"archive"``); ``"none"`` stores raw chunks. N5: gzip at the same
        levels, or raw.
    overwrite : bool
        Replace existing files.
    format : {"hdf5", "n5"}
        ``"n5"`` writes BigDataViewer's N5 layout (``bdv.n5`` loader, formats
        doc section 2.10) with TensorStore (``pip install 'tilefuse[n5]'``):
        one file per chunk, every dtype stored natively (see `BdvN5Writer`).
    workers : int, optional
        Threads reading the views' blocks (default: the CPUs available);
        the blocks are written by this process as they arrive.
    client : distributed.Client, optional
        Read the blocks on this dask cluster instead (the views' data must be
        picklable; at most two blocks per worker thread are in flight).
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    (Path, Path)
        The HDF5 file (or N5 folder) and the XML file.

    Raises
    ------
    OutputExistsError
        If a file exists and ``overwrite`` is false.
    ValueError
        If a view's dtype is not one BigDataViewer reads.
    """
    writer = bdv_writer(
        path,
        views,
        format=format,
        levels=levels,
        chunks=chunks,
        compression=compression,
        overwrite=overwrite,
    )
    block = writer.aligned(block)
    try:
        items = []
        for setup, view in enumerate(views):
            shape = tuple(int(n) for n in view.data.shape[-3:])
            for start in itertools.product(
                *[range(0, n, b) for n, b in zip(shape, block, strict=True)]
            ):
                region = tuple(
                    slice(a, min(a + b, n)) for a, b, n in zip(start, block, shape, strict=True)
                )
                items.append((setup, region))
        task = _ReadBlock([v.data for v in views])
        for (setup, region), data in imap_unordered(
            task, items, workers=workers, client=client, progress=progress, desc="export"
        ):
            writer.write(setup, region, data)
        return writer.close(block=block)
    except BaseException:
        writer.abort()
        raise


class _ReadBlock:
    """Picklable task: one block of one view, as a (z, y, x) array."""

    def __init__(self, data: Sequence[Any]) -> None:
        self.data = list(data)

    def __call__(self, item: tuple[int, tuple[slice, ...]]) -> NDArray[Any]:
        setup, region = item
        out = np.asarray(self.data[setup][(..., *region)])
        return out.reshape([r.stop - r.start for r in region])


class _Shape:
    """Shape and dtype of a view whose pixels arrive later (`BdvHdf5Writer.write`)."""

    def __init__(self, shape: Sequence[int], dtype: Any) -> None:
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)


class _ChunkedLevels:
    """What the HDF5 and N5 BDV writers share: level 0's chunking and block alignment.

    A subclass keeps ``self._levels[setup][level] = (array, factors)``.
    """

    _levels: list[list[Any]]

    def chunks(self, setup: int = 0) -> tuple[int, int, int]:
        """Chunk (z, y, x) of a setup's level 0 (HDF5 chunk, N5 block)."""
        c = self._levels[setup][0][0].chunks
        return (int(c[0]), int(c[1]), int(c[2]))

    def aligned(self, block: Sequence[int]) -> tuple[int, int, int]:
        """``block`` rounded to whole chunks (each chunk then written once)."""
        c = self.chunks(0)
        z, y, x = (max(ch, (b // ch) * ch) for b, ch in zip(block, c, strict=True))
        return (z, y, x)


class BdvHdf5Writer(_ChunkedLevels):
    """A BigDataViewer HDF5 + XML written region by region, then its pyramid, atomically.

    Level 0 of every setup is filled with `write` (in any order, one region
    at a time, from one thread); `close` computes the lower levels from level
    0 block by block, renames the temporary ``.h5.partial`` into place and
    writes the XML. `abort` removes the temporary file. Until `close`
    returns, no file at ``path`` looks complete.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` file; the XML goes next to it.
    views : sequence of BdvView
        One setup each; only ``data.shape`` and ``data.dtype`` are used (pass
        `BdvView.placeholder` views when the pixels come later).
    levels, chunks, compression, overwrite
        As for `write_bdv`.

    Raises
    ------
    OutputExistsError
        If a file exists and ``overwrite`` is false.
    ValueError
        If a view's dtype is not one BigDataViewer reads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        views: Sequence[BdvView],
        *,
        levels: int | None = None,
        chunks: Sequence[int] | None = None,
        compression: str = "default",
        overwrite: bool = False,
    ) -> None:
        import h5py

        self.h5 = Path(path)
        self.xml = self.h5.with_suffix(".xml")
        for p in (self.h5, self.xml):
            if p.exists() and not overwrite:
                msg = f"output exists: {p} (pass overwrite=True to replace it)"
                raise OutputExistsError(msg)
        for v in views:
            if np.dtype(v.data.dtype).name not in _BDV_TYPES:
                msg = f"BigDataViewer cannot store {np.dtype(v.data.dtype)} (view {v.name!r})"
                raise ParameterError(msg)
        comp = _h5_filter(compression)
        self.views = list(views)
        self.h5.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.h5.with_name(self.h5.name + ".partial")
        self._fh: _FailSafeFile | None = None
        self._file: Any = None
        self._restore_sigint: Callable[[], None] | None = None
        self._lock: StoreLock | None = StoreLock(self.h5).acquire()
        try:
            # HDF5 writes through a file object that never fails: a full disk is recorded
            # and raised by `_check` as a WriteError, instead of surfacing inside HDF5
            # (h5py crashes closing a file after a failed write); Ctrl-C is held back too
            self._fh = _FailSafeFile(self.tmp, "w+")
            self._restore_sigint = self._fh.defer_ctrl_c()
            self._file = h5py.File(self._fh, "w", driver="fileobj")
            cz = tuple(int(c) for c in chunks) if chunks is not None else None
            self._levels = [
                _create_setup(self._file, k, v, levels, cz, comp)  # type: ignore[arg-type]
                for k, v in enumerate(self.views)
            ]
        except BaseException:
            self.abort()
            raise

    def write(self, setup: int, region: Sequence[slice], data: NDArray[Any]) -> None:
        """Write a (z, y, x) region of a setup's level 0."""
        ds = self._levels[setup][0][0]
        dt = np.dtype(self.views[setup].data.dtype)
        data = np.asarray(data, dtype=dt)
        data = data.view(np.int16) if dt == np.uint16 else data
        region = tuple(region)
        # in slabs of whole chunks: a Ctrl-C or a full disk stops the write within one
        step = max(1, 8 // int(ds.chunks[0])) * int(ds.chunks[0])
        z0 = region[0].start or 0
        for a in range(0, data.shape[0], step):
            b = min(a + step, data.shape[0])
            ds[(slice(z0 + a, z0 + b), *region[1:])] = data[a:b]
            self._check()
        self._check()

    def _check(self) -> None:
        """Raise a recorded write failure (as `WriteError`) or a held-back Ctrl-C."""
        try:
            if self._fh is not None:
                self._fh.check()
        except OSError as e:
            detail = " ".join(str(e).split())[:300]
            msg = f"writing {self.h5} failed: {detail}; no output was left behind"
            raise WriteError(msg) from e

    def close(self, block: Sequence[int] = (64, 512, 512)) -> tuple[Path, Path]:
        """Compute the pyramids, put the files in place; returns (h5, xml)."""
        try:
            for levels, view in zip(self._levels, self.views, strict=True):
                method = "mode" if view.kind == "label" else "mean"
                _fill_pyramid(levels, np.dtype(view.data.dtype), method, tuple(block), self._check)
            self._file.close()
            self._file = None
            if self._fh is not None:
                self._fh.close()
            self._check()
            xml_new = self.xml.with_name(self.xml.name + ".new")
            _write_xml(xml_new, self.h5.name, self.views)
            os.replace(self.tmp, self.h5)
            os.replace(xml_new, self.xml)
        except BaseException:
            self.abort()
            raise
        self._release()
        return self.h5, self.xml

    def abort(self) -> None:
        """Close and remove the temporary file (the outputs are left as they were)."""
        try:
            if self._file is not None:
                self._file.close()
            if self._fh is not None:
                self._fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self.xml.with_name(self.xml.name + ".new").unlink(missing_ok=True)
            self._release()

    def _release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None
        restore = getattr(self, "_restore_sigint", None)
        if restore is not None:
            self._restore_sigint = None
            restore()  # raises a Ctrl-C that was held back and not yet acted on


class _FailSafeFile(io.FileIO):
    """A file whose writes never raise: the first error is kept for `check` to raise.

    HDF5 does not recover from a failed write (h5py segfaults when the file is
    closed after ENOSPC), so it is never shown one; writes after a failure are
    dropped and the caller stops at its next `check`.
    """

    error: BaseException | None = None

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        if self.error is None:
            try:
                n = int(super().write(b))
            except BaseException as e:  # OSError, or a Ctrl-C inside HDF5's callback
                self.error = e
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return int(super().truncate(size))
            except BaseException as e:
                self.error = e
        return int(size or 0)

    raised: bool = False

    def check(self) -> None:
        """Raise the first write error (or a held-back Ctrl-C), if any."""
        if self.error is not None:
            self.raised = True
            raise self.error

    def defer_ctrl_c(self) -> Callable[[], None] | None:
        """Hold Ctrl-C (SIGINT) back from HDF5's callbacks until the next `check`.

        Python raises KeyboardInterrupt wherever the main thread runs Python
        code, including inside h5py's file-driver callbacks, which HDF5 cannot
        unwind. Returns the function that restores the previous handler (None
        when nothing was changed: not the main thread, or a caller's own handler).
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            return None

        def record(signum: int, frame: Any) -> None:
            if self.error is None:
                self.error = KeyboardInterrupt()

        signal.signal(signal.SIGINT, record)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)
            if isinstance(self.error, KeyboardInterrupt) and not self.raised:
                self.raised = True
                raise KeyboardInterrupt  # held back until the files were consistent

        return restore


def bdv_writer(
    path: str | os.PathLike[str],
    views: Sequence[BdvView],
    *,
    format: Literal["hdf5", "n5"] = "hdf5",
    **options: Any,
) -> BdvHdf5Writer | BdvN5Writer:
    """The region-by-region BigDataViewer writer of a format (`BdvHdf5Writer` or `BdvN5Writer`)."""
    if format == "n5":
        return BdvN5Writer(path, views, **options)
    if format != "hdf5":
        msg = f"format must be 'hdf5' or 'n5', got {format!r}"
        raise ParameterError(msg)
    return BdvHdf5Writer(path, views, **options)


class _N5Level:
    """A TensorStore N5 array seen as (z, y, x): numpy-style reads and writes, native dtype."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.dtype = np.dtype(array.dtype.numpy_dtype)
        self.shape = tuple(int(n) for n in array.shape[::-1])
        self.chunks = tuple(int(n) for n in array.chunk_layout.read_chunk.shape[::-1])

    def __getitem__(self, region: tuple[slice, ...]) -> NDArray[Any]:
        z, y, x = (  # clipped to the shape, as numpy and h5py do
            slice(min(r.start, n), min(r.stop, n)) for r, n in zip(region, self.shape, strict=True)
        )
        data = self.array[x.start : x.stop, y.start : y.stop, z.start : z.stop].read().result()
        return np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0))

    def __setitem__(self, region: tuple[slice, ...], data: NDArray[Any]) -> None:
        data = np.asarray(data)
        if data.dtype != self.dtype and data.dtype.itemsize == self.dtype.itemsize:
            data = data.view(self.dtype)  # _fill_pyramid's int16 bit pattern of uint16
        z, y, x = region
        sub = self.array[x.start : x.stop, y.start : y.stop, z.start : z.stop]
        sub.write(np.asarray(data, dtype=self.dtype).transpose(2, 1, 0)).result()


class BdvN5Writer(_ChunkedLevels):
    """A BigDataViewer N5 container + XML written region by region, then its pyramid, atomically.

    The N5 twin of `BdvHdf5Writer` (same methods): bdv-core's layout
    (``setup<s>/attributes.json`` with ``downsamplingFactors`` and
    ``dataType``, datasets ``setup<s>/timepoint0/s<L>`` with x-first
    dimensions and ``blockSize``), written with TensorStore. N5 keeps one
    chunk per file, so regions aligned to `chunks` (see `aligned`) never share
    a file and a cluster could write them in parallel. Every dtype is stored
    natively (no int16 trick). Everything goes into ``<path>.partial``,
    renamed into place by `close`; `abort` removes it.

    Parameters
    ----------
    path : str or PathLike
        The ``.n5`` folder; the XML goes next to it.
    views : sequence of BdvView
        One setup each; only ``data.shape`` and ``data.dtype`` are used.
    levels, chunks, compression, overwrite
        As for `write_bdv` (chunks default to BigDataViewer's proposal).

    Raises
    ------
    ImportError
        If TensorStore is missing (``pip install 'tilefuse[n5]'``).
    OutputExistsError
        If the folder or the XML exists and ``overwrite`` is false.
    ValueError
        If a view's dtype is not one BigDataViewer reads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        views: Sequence[BdvView],
        *,
        levels: int | None = None,
        chunks: Sequence[int] | None = None,
        compression: str = "default",
        overwrite: bool = False,
    ) -> None:
        import json
        import shutil

        from tilefuse.io.bdv_stores import require_tensorstore

        ts = require_tensorstore("writing BigDataViewer N5")
        self.root = Path(path)
        self.xml = self.root.with_suffix(".xml")
        for p in (self.root, self.xml):
            if p.exists() and not overwrite:
                msg = f"output exists: {p} (pass overwrite=True to replace it)"
                raise OutputExistsError(msg)
        for v in views:
            if np.dtype(v.data.dtype).name not in _BDV_TYPES:
                msg = f"BigDataViewer cannot store {np.dtype(v.data.dtype)} (view {v.name!r})"
                raise ParameterError(msg)
        if compression != "none" and compression not in _GZIP_LEVELS:
            msg = f"compression must be one of {(*_GZIP_LEVELS, 'none')}, got {compression!r}"
            raise ParameterError(msg)
        comp = (
            {"type": "raw"}
            if compression == "none"
            else {"type": "gzip", "level": _GZIP_LEVELS[compression]}
        )
        self.views = list(views)
        self.tmp = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self._levels: list[list[tuple[_N5Level, tuple[int, ...]]]] = []
        try:
            (self.tmp / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
            cz = tuple(int(c) for c in chunks) if chunks is not None else None
            for setup, view in enumerate(self.views):
                shape = tuple(int(s) for s in view.data.shape[-3:])
                dt = np.dtype(view.data.dtype)
                res, sub = _mipmaps(shape, view.voxel_size, levels, cz)  # type: ignore[arg-type]
                group = self.tmp / f"setup{setup}"
                group.mkdir()
                attrs = {"downsamplingFactors": res, "dataType": dt.name}
                (group / "attributes.json").write_text(json.dumps(attrs))
                tp = group / "timepoint0"
                tp.mkdir()
                tp_attrs = {"resolution": list(view.voxel_size[::-1]), "multiScale": True}
                (tp / "attributes.json").write_text(json.dumps(tp_attrs))
                out = []
                for lvl, (r, s) in enumerate(zip(res, sub, strict=True)):
                    f_zyx = tuple(int(x) for x in r[::-1])
                    lshape = tuple(-(-n // k) for n, k in zip(shape, f_zyx, strict=True))
                    block = tuple(min(c, n) for c, n in zip(s[::-1], lshape, strict=True))
                    spec = {
                        "driver": "n5",
                        "kvstore": {"driver": "file", "path": f"{tp}/s{lvl}/"},
                        "metadata": {
                            "dimensions": list(lshape[::-1]),
                            "blockSize": list(block[::-1]),
                            "dataType": dt.name,
                            "compression": comp,
                            "downsamplingFactors": list(r),
                        },
                        "create": True,
                    }
                    out.append((_N5Level(ts.open(spec).result()), f_zyx))
                self._levels.append(out)
        except BaseException:
            self.abort()
            raise

    def write(self, setup: int, region: Sequence[slice], data: NDArray[Any]) -> None:
        """Write a (z, y, x) region of a setup's level 0."""
        self._levels[setup][0][0][tuple(region)] = np.asarray(
            data, dtype=self.views[setup].data.dtype
        )

    def close(self, block: Sequence[int] = (64, 512, 512)) -> tuple[Path, Path]:
        """Compute the pyramids, put the folder in place; returns (n5, xml)."""
        import shutil

        try:
            for levels, view in zip(self._levels, self.views, strict=True):
                method = "mode" if view.kind == "label" else "mean"
                dt = np.dtype(view.data.dtype)
                for k in range(1, len(levels)):  # each level's blocks: whole chunks
                    c = levels[k][0].chunks
                    bs = tuple(max(ch, (b // ch) * ch) for b, ch in zip(block, c, strict=True))
                    _fill_pyramid(levels[k - 1 : k + 1], dt, method, bs)
            if self.root.exists():
                shutil.rmtree(self.root)
            os.replace(self.tmp, self.root)
        except BaseException:
            self.abort()
            raise
        _write_xml(self.xml, self.root.name, self.views, loader="bdv.n5")
        return self.root, self.xml

    def abort(self) -> None:
        """Remove the temporary folder (the outputs are left as they were)."""
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def _mipmaps(
    shape: tuple[int, int, int],
    voxel_size: Sequence[float],
    levels: int | None,
    chunks_zyx: tuple[int, int, int] | None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Resolutions and subdivisions (XYZ per level), as `_create_setup` derives them."""
    res, sub = propose_mipmaps(shape[::-1], list(voxel_size)[::-1])
    if shape[0] == 1:  # 2D: BigStitcher's rule
        sub = [[s[0], s[1], 1] for s in sub]
    if levels is not None:
        res, sub = res[:levels], sub[:levels]
    if chunks_zyx is not None:
        sub = [list(chunks_zyx[::-1]) for _ in sub]
    return res, sub


def _create_setup(
    f: Any,
    setup: int,
    view: BdvView,
    levels: int | None,
    chunks_zyx: tuple[int, int, int] | None,
    comp: dict[str, Any],
) -> list[tuple[Any, tuple[int, ...]]]:
    """Create a setup's groups and (empty) level datasets; returns [(dataset, factors zyx)]."""
    shape = tuple(int(s) for s in view.data.shape[-3:])
    dt = np.dtype(view.data.dtype)
    store_dt = np.dtype(np.int16) if dt == np.uint16 else dt
    res, sub = propose_mipmaps(shape[::-1], view.voxel_size[::-1])
    if shape[0] == 1:  # 2D: BigStitcher's rule
        sub = [[s[0], s[1], 1] for s in sub]
    if levels is not None:
        res, sub = res[:levels], sub[:levels]
    if chunks_zyx is not None:
        sub = [list(chunks_zyx[::-1]) for _ in sub]
    g = f.create_group(f"s{setup:02d}")
    g.create_dataset("resolutions", data=np.asarray(res, dtype=np.float64))
    g.create_dataset("subdivisions", data=np.asarray(sub, dtype=np.int32))
    if dt != np.uint16:
        g.attrs.create("dataType", np.bytes_(dt.name))  # fixed-length ASCII, as Java writes it
    out = []
    for lvl, (r, s) in enumerate(zip(res, sub, strict=True)):
        f_zyx = tuple(int(x) for x in r[::-1])
        lshape = tuple(-(-n // k) for n, k in zip(shape, f_zyx, strict=True))
        chunks = tuple(min(c, n) for c, n in zip(s[::-1], lshape, strict=True))
        ds = f.create_dataset(
            f"t00000/s{setup:02d}/{lvl}/cells", shape=lshape, dtype=store_dt, chunks=chunks, **comp
        )
        out.append((ds, f_zyx))
    return out


def _fill_pyramid(
    levels: list[tuple[Any, tuple[int, ...]]],
    dt: np.dtype[Any],
    method: str,
    block: tuple[int, ...],
    check: Callable[[], None] = lambda: None,
) -> None:
    """Compute every level below 0 from the level above, block by block."""
    for (prev, f_prev), (ds, f_zyx) in itertools.pairwise(levels):
        rel = tuple(a // b for a, b in zip(f_zyx, f_prev, strict=True))
        for start in itertools.product(
            *[range(0, n, b) for n, b in zip(ds.shape, block, strict=True)]
        ):
            region = tuple(
                slice(a, min(a + b, n)) for a, b, n in zip(start, block, ds.shape, strict=True)
            )
            src = tuple(slice(x.start * k, x.stop * k) for x, k in zip(region, rel, strict=True))
            chunk = downsample(_as_type(prev[src], dt), rel, method)  # type: ignore[arg-type]
            ds[region] = chunk.view(np.int16) if dt == np.uint16 else chunk
            check()


#: gzip level per `OutputOptions.compression` (``"gzip"``: the historical name of the default)
_GZIP_LEVELS = {"default": 4, "gzip": 4, "fast": 1, "archive": 9}


def _h5_filter(compression: str) -> dict[str, Any]:
    """h5py dataset keywords for a compression name."""
    if compression == "none":
        return {}
    if compression not in _GZIP_LEVELS:
        msg = f"compression must be one of {(*_GZIP_LEVELS, 'none')}, got {compression!r}"
        raise ParameterError(msg)
    return {"compression": "gzip", "compression_opts": _GZIP_LEVELS[compression], "shuffle": True}


def _as_type(a: NDArray[Any], dt: np.dtype[Any]) -> NDArray[Any]:
    """Read back a stored level in the view's dtype (int16 bit pattern -> uint16)."""
    return a.view(np.uint16) if dt == np.uint16 else a


def _fmt(values: ArrayLike) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=float).ravel())


def _write_xml(
    path: Path, h5_name: str, views: Sequence[BdvView], loader: str = "bdv.hdf5"
) -> None:
    root = ET.Element("SpimData", version="0.2")
    ET.SubElement(root, "BasePath", type="relative").text = "."
    seq = ET.SubElement(root, "SequenceDescription")
    if loader == "bdv.n5":
        el = ET.SubElement(seq, "ImageLoader", format="bdv.n5", version="1.1")
        ET.SubElement(el, "n5", type="relative").text = h5_name
    else:
        el = ET.SubElement(seq, "ImageLoader", format="bdv.hdf5")
        ET.SubElement(el, "hdf5", type="relative").text = h5_name
    setups = ET.SubElement(seq, "ViewSetups")
    for i, v in enumerate(views):
        vs = ET.SubElement(setups, "ViewSetup")
        ET.SubElement(vs, "id").text = str(i)
        ET.SubElement(vs, "name").text = v.name
        ET.SubElement(vs, "size").text = " ".join(str(int(n)) for n in v.data.shape[-3:][::-1])
        vox = ET.SubElement(vs, "voxelSize")
        ET.SubElement(vox, "unit").text = "µm"
        ET.SubElement(vox, "size").text = _fmt(v.voxel_size[::-1])
        attrs = ET.SubElement(vs, "attributes")
        for key, val in (
            ("illumination", 0),
            ("channel", v.channel),
            ("tile", v.tile),
            ("angle", 0),
        ):
            ET.SubElement(attrs, key).text = str(val)
    for name, tag, ids in (
        ("illumination", "Illumination", [0]),
        ("channel", "Channel", sorted({v.channel for v in views})),
        ("tile", "Tile", sorted({v.tile for v in views})),
        ("angle", "Angle", [0]),
    ):
        block = ET.SubElement(setups, "Attributes", name=name)
        for k in ids:
            e = ET.SubElement(block, tag)
            ET.SubElement(e, "id").text = str(k)
            ET.SubElement(e, "name").text = str(k)
    tps = ET.SubElement(seq, "Timepoints", type="range")
    ET.SubElement(tps, "first").text = "0"
    ET.SubElement(tps, "last").text = "0"
    regs = ET.SubElement(root, "ViewRegistrations")
    for i, v in enumerate(views):
        reg = ET.SubElement(regs, "ViewRegistration", timepoint="0", setup=str(i))
        tr = ET.SubElement(reg, "ViewTransform", type="affine")
        ET.SubElement(tr, "Name").text = "calibration"
        vz, vy, vx = v.voxel_size
        oz, oy, ox = v.origin
        ET.SubElement(tr, "affine").text = _fmt([vx, 0, 0, ox, 0, vy, 0, oy, 0, 0, vz, oz])
    ET.indent(root, space="  ")
    tmp = path.with_name(path.name + ".partial")
    ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)
    os.replace(tmp, path)


class _Channel:
    """One channel of a (c, z, y, x) array, sliceable as (z, y, x)."""

    def __init__(self, array: Any, channel: int) -> None:
        self.array, self.channel = array, channel
        self.shape, self.dtype = tuple(array.shape[-3:]), array.dtype

    def __getitem__(self, index: Any) -> NDArray[Any]:
        index = index[1:] if index and index[0] is Ellipsis else index
        return np.asarray(self.array[(self.channel, *index)])


def group_to_bdv(
    group: Any,
    path: str | os.PathLike[str],
    *,
    allow_incomplete: bool = False,
    **options: Any,
) -> tuple[Path, Path]:
    """Export level 0 of a `MultiScaleGroup` (image or labels) to BigDataViewer HDF5 + XML.

    Each channel becomes a setup with its own channel attribute; labels are
    downsampled by mode. ``options`` are `write_bdv`'s keywords (see
    `MultiScaleGroup.to_bdv` for the list).
    """
    if not group.is_complete and not allow_incomplete:
        msg = (
            f"{group.path} is an unfinished tilefuse write: resume the command that wrote it "
            "first (or pass allow_incomplete=True)"
        )
        raise IncompleteStoreError(msg)
    arr = group[0]
    vs = tuple(float(v) for v in group.voxel_size)
    org = tuple(float(v) for v in group.origin)
    names = group.channel_names or [group.name]
    if arr.ndim == 3:
        views = [BdvView(arr, vs, org, name=names[0], kind=group.kind)]  # type: ignore[arg-type]
    else:
        views = [
            BdvView(_Channel(arr, c), vs, org, name=str(names[c]), channel=c, kind=group.kind)  # type: ignore[arg-type]
            for c in range(arr.shape[0])
        ]
    return write_bdv(path, views, **options)
