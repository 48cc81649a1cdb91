"""The settings of a fusion, declared once: what to compute, where to write it, how to run.

Three small frozen dataclasses shared by `Tileset.fuse`, `Tileset.fuse_labels`,
`Tileset.to_bdv`, the block writers (`tilefuse.writers`) and the command line:

- `FusionOptions`: how the output pixels are computed (blend mode, ramp width,
  priority, output voxel size). They determine the pixels, so they enter the
  plan's fingerprint.
- `OutputOptions`: how the result is stored (pyramid levels, chunks, shards,
  NGFF version, compression, name, overwrite). Each writer reads the fields
  that apply to it.
- `ExecOptions`: how the work runs (threads, a dask client, a progress bar).
  They never change the result.

Each field is declared here once, with its default and its meaning; the
keyword arguments of `Tileset.fuse` and friends are overrides of these
fields (``None`` means "not given": the options object's value is used).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tilefuse.blend import Blend, get_blend
from tilefuse.errors import ParameterError, ParameterTypeError

__all__ = ["ExecOptions", "FusionOptions", "OutputOptions", "with_overrides"]

Compression = Literal["default", "fast", "archive", "none"]
_COMPRESSIONS = ("default", "fast", "archive", "none")


@dataclass(frozen=True)
class FusionOptions:
    """How overlapping tiles become one output volume.

    Attributes
    ----------
    blend : str or Blend
        How overlapping tiles combine: a registered blend mode name (see
        `tilefuse.blend.blend_names`: ``"linear"`` feathered, ``"overwrite"``,
        ``"max"``, ``"mean"``, ``"centre"``) or a `tilefuse.blend.Blend` object.
        Label fusion accepts only label-safe modes (``"centre"``, ``"overwrite"``)
        and defaults to ``"centre"``.
    blend_width : float or tuple of 3 floats, optional
        Ramp width (z, y, x) in micrometres for feathered modes (``linear``);
        default 10 % of the median tile extent along each axis.
    priority : {"last", "first"}
        For ``overwrite``: which tile wins where several have data.
    voxel_size : tuple of 3 floats, optional
        Output voxel size (z, y, x) in micrometres (default: the tileset's);
        other sizes resample.
    interpolation : {"linear", "nearest"}
        How a tile is sampled at output voxel centres that fall between its
        own voxel centres (fractional offsets, another voxel size, rotation):
        ``linear`` (images; computed in float) or ``nearest`` (the voxel
        whose extent holds the centre; values are copied, never mixed, so
        integers stay exact). Label fusion always uses ``nearest``.
    """

    blend: str | Blend = "linear"
    blend_width: float | tuple[float, float, float] | None = None
    priority: Literal["last", "first"] = "last"
    voxel_size: tuple[float, float, float] | None = None
    interpolation: Literal["linear", "nearest"] = "linear"

    def __post_init__(self) -> None:
        get_blend(self.blend)  # an unknown mode is refused here, before any work
        if self.priority not in ("last", "first"):
            msg = f"priority must be 'last' or 'first', got {self.priority!r}"
            raise ParameterError(msg)
        if self.interpolation not in ("linear", "nearest"):
            msg = f"interpolation must be 'linear' or 'nearest', got {self.interpolation!r}"
            raise ParameterError(msg)
        for key in ("blend_width", "voxel_size"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, (int, float)):
                object.__setattr__(self, key, tuple(float(v) for v in value))


@dataclass(frozen=True)
class OutputOptions:
    """How and where a fused result is stored; each writer uses the fields that apply.

    Attributes
    ----------
    levels : int, optional
        Pyramid levels to write (1 = full resolution only). Default: the
        writer's natural choice: 1 for a new OME-Zarr store, the image's level
        count for labels fused into an image, every level BigDataViewer
        proposes for BDV-HDF5 (there ``levels`` is a cap).
    chunks : tuple of 3 ints, optional
        Chunk (z, y, x). OME-Zarr: about 1 MiB by default (see
        `tilefuse.io.ome_zarr.default_chunks`); BDV-HDF5: the HDF5 chunk
        (default: BigDataViewer's proposal); in memory: the work block
        (default up to 64 x 512 x 512).
    shards : tuple of 3 ints or bool
        OME-Zarr 0.5 shard (z, y, x), whole multiples of ``chunks``; ``True``
        picks 2 x 4 x 4 chunks, ``False`` writes unsharded.
    version : {"0.5", "0.4"}
        OME-NGFF version: 0.5 writes zarr v3, 0.4 writes zarr v2.
    compression : {"default", "fast", "archive", "none"}
        OME-Zarr images: blosc-zstd level 1 + shuffle, blosc-lz4, blosc-zstd
        level 5 (labels always zstd level 3 unless ``"none"``). BDV-HDF5: gzip
        level 4, 1, 9 with byte shuffle.
    name : str, optional
        Image name (OME metadata / BDV setup name); labels default to ``"labels"``.
    overwrite : bool
        Replace an existing output. Without it an existing output is refused,
        except an interrupted OME-Zarr fusion of the same plan, which is resumed.
        The replacement is built beside the old output and swapped in only
        once complete.
    allow_large_output : bool
        Write an output grid of more than 100x the tiles' total voxels
        (refused by default: usually a wrong position or voxel size).
    """

    levels: int | None = None
    chunks: tuple[int, int, int] | None = None
    shards: tuple[int, int, int] | bool = True
    version: Literal["0.4", "0.5"] = "0.5"
    compression: Compression = "default"
    name: str | None = None
    overwrite: bool = False
    allow_large_output: bool = False

    def __post_init__(self) -> None:
        if self.levels is not None and int(self.levels) < 1:
            msg = f"levels must be at least 1, got {self.levels}"
            raise ParameterError(msg)
        if self.version not in ("0.4", "0.5"):
            msg = f"version must be '0.4' or '0.5', got {self.version!r}"
            raise ParameterError(msg)
        if self.compression not in _COMPRESSIONS:
            msg = f"compression must be one of {_COMPRESSIONS}, got {self.compression!r}"
            raise ParameterError(msg)
        if self.chunks is not None:
            chunks = tuple(int(c) for c in self.chunks)
            if len(chunks) != 3 or min(chunks) < 1:
                msg = f"chunks must be 3 positive ints (z, y, x), got {self.chunks}"
                raise ParameterError(msg)
            object.__setattr__(self, "chunks", chunks)
        if self.shards is None:
            object.__setattr__(self, "shards", False)
        elif not isinstance(self.shards, bool):
            object.__setattr__(self, "shards", tuple(int(s) for s in self.shards))


@dataclass(frozen=True)
class ExecOptions:
    """How the work runs; never changes the result.

    Attributes
    ----------
    workers : int, optional
        Threads (default: the CPUs available; 1 runs inline).
    client : distributed.Client, optional
        Run blocks on this dask cluster instead of local threads.
    progress : bool
        Show a progress bar.
    """

    workers: int | None = None
    client: Any = None
    progress: bool = False


OptionsT = TypeVar("OptionsT", FusionOptions, OutputOptions, ExecOptions)


def with_overrides(options: OptionsT | None, cls: type[OptionsT], /, **overrides: Any) -> OptionsT:
    """``options`` (or ``cls()``) with every override that is not None applied.

    The one place where the keyword conveniences of `Tileset.fuse` & co. meet the
    options objects: a keyword left at None keeps the object's value.
    """
    base = cls() if options is None else options
    if not isinstance(base, cls):
        msg = f"expected {cls.__name__}, got {type(base).__name__}"
        raise ParameterTypeError(msg)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        msg = f"{cls.__name__} has no field(s) {sorted(unknown)}"
        raise ParameterTypeError(msg)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **changes) if changes else base
