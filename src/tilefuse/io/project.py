"""Tilesets from BigStitcher / BigDataViewer projects (SpimData XML), and back.

A project's views become tiles: views that share a ``tile`` attribute (its
channels and illuminations) are the channels of one `Tile`. Positions come
from the composed ViewRegistrations, converted to (z, y, x) micrometres
(`tilefuse.io.spimdata`). Pixels are read lazily through the XML's image
loader when tilefuse can read it (``bdv.hdf5`` now); otherwise the project
still opens (shapes, channels and positions are known) and only reading
pixels raises an error naming the missing or unsupported image.

BigDataViewer's affine maps a voxel index to the world position of that
voxel's centre, which is exactly tilefuse's placement: the matrices are used
as they are, in both directions, with no half-voxel term.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tilefuse.errors import (
    IncompatibleTilesError,
    MissingTileError,
    OutputExistsError,
    ParameterError,
    SelectionError,
    UnsupportedFormatError,
)
from tilefuse.options import ExecOptions, OutputOptions
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = [
    "UnreadableSource",
    "load_positions",
    "tiles_from_spimdata",
    "tileset_to_bdv",
    "tileset_to_xml",
]


class UnreadableSource(Source):
    """Shape and dtype of a view whose pixels tilefuse cannot reach; reading raises.

    ``error`` is the exception class raised on read (`MissingTileError` by
    default; ImportError when an optional dependency is missing).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: Any,
        reason: str,
        error: type[Exception] = MissingTileError,
    ) -> None:
        self._shape = shape  # type: ignore[assignment]  # (c, z, y, x) from the caller
        self._dtype, self.reason, self.error = np.dtype(dtype), reason, error

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(c, z, y, x)``."""
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        """Assumed pixel dtype (BigDataViewer's default, uint16)."""
        return self._dtype

    def _read(self, region: Region) -> NDArray[Any]:
        """Raise: the pixels are not available."""
        raise self.error(self.reason)


def tiles_from_spimdata(
    xml: str | os.PathLike[str],
    *,
    timepoint: int | None = None,
    angle: int | None = None,
    world_unit_um: Any = None,
) -> list[Tile]:
    """The tiles of a SpimData XML; see `tilefuse.Tileset.from_bigstitcher`."""
    from tilefuse.io.spimdata import check_world_unit, read_spimdata
    from tilefuse.tile import Tile

    sd = read_spimdata(xml)
    given = None if world_unit_um is None else check_world_unit(world_unit_um, sd.path)
    if timepoint is None and not sd.timepoints:
        msg = (
            f"{sd.path}: the <SequenceDescription> declares no timepoints and no views: "
            "the project holds no tiles to open"
        )
        raise UnsupportedFormatError(msg)
    tp = sd.timepoints[0] if timepoint is None else timepoint
    _check_selection(sd, tp, angle)
    groups = sd.tiles(tp, angle=angle)
    if not groups:
        msg = f"{sd.path}: no views at timepoint {tp}"
        raise UnsupportedFormatError(msg)
    loader = sd.image_loader
    files: dict[Any, Any] = {}  # one reader per container, shared by the tiles
    tiles = []
    for k, (tile_id, setups) in enumerate(sorted(groups.items())):
        first = sd.setups[setups[0]]
        if first.size_zyx is None:
            msg = f"{sd.path}: ViewSetup {first.id} has no <size>"
            raise UnsupportedFormatError(msg)
        source = _source(sd, loader, setups, tp, first.size_zyx, files)
        names = tuple(_channel_name(sd, s) for s in setups)
        unit = given if given is not None else np.asarray(sd.world_unit_um(tp, setups[0]))
        tiles.append(
            Tile(
                source,
                sd.placement_zyx(tp, setups[0], world_unit_um=unit),
                name=first.name or f"tile {tile_id}",
                index=k,
                channels=tuple(str(n) for n in names) if len(set(names)) == len(names) else (),
                metadata={
                    "xml": str(sd.path),
                    "tile": tile_id,
                    "setups": list(setups),
                    "timepoint": tp,
                    "timepoints": list(sd.timepoints),
                    "angle": sd.setups[setups[0]].attribute("angle"),
                    "angles": sorted({s.attribute("angle") for s in sd.setups.values()}),
                    "world_unit_um": [float(u) for u in unit],
                    "unit": "pixel" if first.unit == "pixel" else "micrometer",
                },
            )
        )
    return tiles


def _check_selection(sd: Any, timepoint: int | None, angle: int | None) -> None:
    """Refuse a timepoint or angle the project does not have (named, with what it has)."""
    if timepoint is not None and timepoint not in sd.timepoints:
        msg = f"{sd.path}: no timepoint {timepoint}; the project has timepoints {sd.timepoints}"
        raise SelectionError(msg)
    angles = sorted({s.attribute("angle") for s in sd.setups.values()})
    if angle is not None and angle not in angles:
        msg = f"{sd.path}: no angle {angle}; the project has angle ids {angles}"
        raise SelectionError(msg)


def _channel_name(sd: Any, setup: int) -> str:
    """``channel <name>``, plus ``illumination <name>`` when the project has several."""
    vs = sd.setups[setup]

    def name(attr: str) -> str:
        entity = sd.attributes.get(attr, {}).get(vs.attribute(attr), {})
        return str(entity.get("name", vs.attribute(attr)))

    text = f"channel {name('channel')}"
    if len(sd.attributes.get("illumination", {})) > 1:
        text += f" illumination {name('illumination')}"
    return text


def _source(
    sd: Any,
    loader: Any,
    setups: list[int],
    tp: int,
    size_zyx: tuple[int, ...],
    files: dict[Any, Any],
) -> Any:
    shape = (len(setups), *size_zyx)
    if loader is None:
        return UnreadableSource(shape, np.uint16, f"{sd.path}: the project has no <ImageLoader>")
    if loader.format == "bdv.hdf5" and isinstance(loader.path, Path):
        if loader.path.is_file():
            from tilefuse.io.bdv_read import BdvFile, BdvSource

            if loader.path not in files:
                files[loader.path] = BdvFile(loader.path)
            return BdvSource(files[loader.path], setups, timepoint=tp)
        return UnreadableSource(
            shape, np.uint16, f"{sd.path}: image file {loader.path} (bdv.hdf5) not found"
        )
    if loader.format in ("bdv.n5", "bdv.n5.cloud") and loader.path is not None:
        return _store_source(sd, loader, setups, tp, shape, files)
    if loader.format == "bdv.multimg.zarr" and all((tp, s) in loader.views for s in setups):
        return _store_source(sd, loader, setups, tp, shape, files)
    where = loader.path if loader.path is not None else "(per-view files)"
    return UnreadableSource(
        shape,
        np.uint16,
        f"{sd.path}: tilefuse cannot read image loader {loader.format!r} yet ({where})",
    )


def _store_source(
    sd: Any,
    loader: Any,
    setups: list[int],
    tp: int,
    shape: tuple[int, ...],
    files: dict[Any, Any],
) -> Any:
    """An N5 or multi-image zarr source; an UnreadableSource naming why when it cannot open."""
    from tilefuse.io import bdv_stores

    what = f"{sd.path}: image loader {loader.format!r}"
    key = (loader.format, str(loader.path))
    failed = files.get(("failed", key))
    if failed is not None:  # one attempt per container, not one per tile
        return UnreadableSource(shape, np.uint16, failed[0], failed[1])
    try:
        if loader.format == "bdv.multimg.zarr":
            groups = [loader.views[(tp, s)] for s in setups]
            indices = [_zgroup_indices(loader.element, tp, s) for s in setups]
            if any(isinstance(g, Path) and not g.is_dir() for g in groups):
                missing = next(g for g in groups if isinstance(g, Path) and not g.is_dir())
                reason = f"{what}: OME-Zarr image {missing} not found"
                return UnreadableSource(shape, np.uint16, reason)
            return bdv_stores.ZarrViewSource(groups, indices)
        if isinstance(loader.path, Path) and not loader.path.is_dir():
            reason = f"{what}: N5 container {loader.path} not found"
            return UnreadableSource(shape, np.uint16, reason)
        if key not in files:
            files[key] = bdv_stores.BdvN5(loader.path)
        return bdv_stores.BdvN5Source(files[key], setups, timepoint=tp)
    except ImportError as e:
        files[("failed", key)] = (f"{what}: {e}", ImportError)
        return UnreadableSource(shape, np.uint16, f"{what}: {e}", ImportError)
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
        if not bdv_stores.is_remote(str(loader.path or "")):
            raise
        reason = f"{what}: cannot read {loader.path}: {e}"
        files[("failed", key)] = (reason, MissingTileError)
        return UnreadableSource(shape, np.uint16, reason)


def _zgroup_indices(element: Any, tp: int, setup: int) -> tuple[int, ...] | None:
    """The ``indicies`` (c, t) of a view's ``<zgroup>``; None when absent or empty."""
    for z in element.iterfind("zgroups/zgroup"):
        if int(z.get("setup")) == setup and int(z.get("tp", z.get("timepoint", -1))) == tp:
            values = re.findall(r"-?\d+", z.get("indicies") or "")
            return tuple(int(v) for v in values) or None
    return None


def tileset_to_bdv(
    tileset: Sequence[Tile],
    path: str | os.PathLike[str],
    options: OutputOptions | None = None,
    *,
    format: Literal["hdf5", "n5"] = "hdf5",
    execution: ExecOptions | None = None,
) -> tuple[Path, Path]:
    """Export every tile as its own BDV setup (tile attribute, position as registration).

    Channels of a tile become setups with a channel attribute. Tiles must be
    axis-aligned. Of ``options``, ``levels`` (a cap), ``chunks``,
    ``compression`` and ``overwrite`` apply (see `tilefuse.io.bdv.write_bdv`);
    ``execution`` says who reads the tiles' blocks: one at a time by default,
    ``workers`` threads or a dask client when given (worth it where decoding is
    costly: JPEG 2000, ND2; the file is always written by this process).
    """
    from tilefuse.io.bdv import write_bdv
    from tilefuse.io.outputs import check_output_paths, input_paths

    h5 = Path(path)
    inputs = input_paths(tileset)
    check_output_paths(h5, inputs)
    check_output_paths(h5.with_suffix(".xml"), inputs)
    o = options or OutputOptions()
    ex = execution or ExecOptions()
    # by default one block at a time: the writer's compression is the bottleneck, and reading
    # ahead costs two blocks of memory per thread; workers= or a client read in parallel
    workers = 1 if ex.workers is None and ex.client is None else ex.workers
    return write_bdv(
        path,
        _tile_views(tileset),
        levels=o.levels,
        chunks=o.chunks,
        compression=o.compression,
        overwrite=o.overwrite,
        format=format,
        workers=workers,
        client=ex.client,
        progress=ex.progress,
    )


def _tile_views(tileset: Sequence[Tile]) -> list[Any]:
    """One BDV view per tile and channel (setup ids in that order)."""
    from tilefuse.io.bdv import BdvView

    views = []
    for t in tileset:
        if not t.is_translation:
            msg = f"tile {t.name!r} is rotated; BDV export writes axis-aligned tiles only"
            raise IncompatibleTilesError(msg)
        vs = tuple(float(v) for v in t.voxel_size)
        off = tuple(float(v) for v in t.offset)
        for c in range(t.n_channels):
            views.append(
                BdvView(
                    _TileChannel(t, c),
                    vs,  # type: ignore[arg-type]
                    off,  # type: ignore[arg-type]
                    name=f"{t.name} {t.channels[c]}",
                    channel=c,
                    tile=t.index,
                )
            )
    return views


def tileset_to_xml(
    tileset: Sequence[Tile],
    path: str | os.PathLike[str],
    *,
    image_path: str | os.PathLike[str] | None = None,
    name: str = "tilefuse registration",
    report: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a tileset's placements as BigStitcher XML; see `Tileset.to_bigstitcher_xml`."""
    from tilefuse.io.spimdata import read_spimdata
    from tilefuse.io.spimdata_write import registration_hash, translation_xyz, write_spimdata

    path = Path(path)
    sources = {t.metadata.get("xml") for t in tileset}
    if len(sources) == 1 and None not in sources and all("setups" in t.metadata for t in tileset):
        sd = read_spimdata(str(sources.pop()))  # a round trip of the project the tiles came from
        added: dict[tuple[int, int], tuple[str, Any]] = {}
        for t in tileset:
            tp, setups = t.metadata["timepoint"], t.metadata["setups"]
            w = _world_unit(t, sd)
            before = sd.placement_zyx(tp, setups[0], world_unit_um=w)
            if not np.allclose(before[:3, :3], t.affine[:3, :3], rtol=1e-9, atol=1e-12):
                msg = f"tile {t.name!r}: only translations can be written back as a transform"
                raise IncompatibleTilesError(msg)
            delta_um = t.offset - before[:3, 3]
            if np.any(np.abs(delta_um) > 1e-12):
                delta_world = delta_um / w
                for s in setups:
                    added[(tp, s)] = (name, translation_xyz(delta_world))
        pairwise = []
        for k in report.links if report is not None else []:
            ti, tj = tileset[k.i], tileset[k.j]
            tp, sa, sb = (
                ti.metadata["timepoint"],
                ti.metadata["setups"][0],
                tj.metadata["setups"][0],
            )
            w = _world_unit(ti, sd)
            # BigStitcher's overlap box spans voxel centres: first to last
            lo = np.maximum(report.offsets_before[k.i], report.offsets_before[k.j])
            hi = np.minimum(
                report.offsets_before[k.i] + (np.asarray(ti.shape) - 1) * ti.voxel_size,
                report.offsets_before[k.j] + (np.asarray(tj.shape) - 1) * tj.voxel_size,
            )
            pairwise.append(
                {
                    "setup_a": sa,
                    "setup_b": sb,
                    "timepoint": tp,
                    "shift_xyz": (k.shift_um / w)[::-1],
                    "correlation": k.ncc,
                    "hash": registration_hash(sd.affine_xyz(tp, sa), sd.affine_xyz(tp, sb)),
                    "bbox_xyz": [*(lo / w)[::-1], *(hi / w)[::-1]],
                }
            )
        return write_spimdata(
            sd, path, add_transforms=added, pairwise=pairwise, overwrite=overwrite
        )
    if image_path is None:
        msg = (
            "these tiles do not come from a BigStitcher project: pass image_path= (the BDV "
            ".h5 the XML should load), or write both with Tileset.to_bdv"
        )
        raise ParameterError(msg)
    if path.exists() and not overwrite:
        msg = f"output exists: {path}"
        raise OutputExistsError(msg)
    from tilefuse.io.bdv import _write_xml

    rel = os.path.relpath(Path(image_path).resolve(), path.parent.resolve())
    _write_xml(path, rel, _tile_views(tileset))
    return path


def _world_unit(tile: Any, sd: Any) -> NDArray[np.float64]:
    """The world unit (z, y, x) a tile was opened with, else the project's own."""
    if "world_unit_um" in tile.metadata:
        return np.asarray(tile.metadata["world_unit_um"], dtype=float)
    tp, setup = tile.metadata["timepoint"], tile.metadata["setups"][0]
    return np.asarray(sd.world_unit_um(tp, setup), dtype=float)


def load_positions(
    tileset: Sequence[Tile],
    xml: str | os.PathLike[str],
    *,
    timepoint: int | None = None,
    world_unit_um: Any = None,
) -> list[Tile]:
    """The tiles placed as in a project; see `Tileset.load_positions`."""
    import dataclasses

    from tilefuse.errors import GridMismatchError, IncompatibleTilesError
    from tilefuse.io.spimdata import check_world_unit, read_spimdata

    sd = read_spimdata(xml)
    given = None if world_unit_um is None else check_world_unit(world_unit_um, sd.path)
    tp = sd.timepoints[0] if timepoint is None else timepoint
    groups = sd.tiles(tp)
    ids = sorted(groups)
    by_id = all("tile" in t.metadata for t in tileset)
    if not by_id and len(ids) != len(tileset):
        msg = f"{sd.path}: {len(ids)} tiles in the project, {len(tileset)} in this tileset"
        raise IncompatibleTilesError(msg)
    tiles = []
    for k, t in enumerate(tileset):
        tid = t.metadata["tile"] if by_id else ids[k]
        if tid not in groups:
            msg = f"{sd.path}: no tile {tid} (for tile {t.name!r}); tiles are {ids}"
            raise IncompatibleTilesError(msg)
        setup = sd.setups[groups[tid][0]]
        if setup.size_zyx is not None and tuple(setup.size_zyx) != tuple(t.shape):
            msg = (
                f"{sd.path}: tile {tid} is a grid of {tuple(setup.size_zyx)} voxels (z, y, x) "
                f"but tile {t.name!r} is {t.shape} at {t.voxel_size.tolist()} um: the project "
                "places other voxels (another resolution?); open the tiles at the project's "
                "resolution (e.g. Tileset.downscale to match, or the same level)"
            )
            raise GridMismatchError(msg)
        if given is not None:
            unit = given
        elif "world_unit_um" in t.metadata:  # what the tiles were opened with
            unit = np.asarray(t.metadata["world_unit_um"], dtype=float)
        else:
            unit = np.asarray(sd.world_unit_um(tp, groups[tid][0]), dtype=float)
        meta = {**t.metadata, "world_unit_um": [float(u) for u in unit]}
        affine = sd.placement_zyx(tp, groups[tid][0], world_unit_um=unit)
        tiles.append(dataclasses.replace(t, affine=affine, metadata=meta))
    return tiles


class _TileChannel:
    """One channel of a tile as a sliceable (z, y, x) array."""

    def __init__(self, tile: Any, channel: int) -> None:
        self.tile, self.channel = tile, channel
        self.shape, self.dtype = tile.shape, tile.dtype

    def __getitem__(self, index: Any) -> NDArray[Any]:
        region = index[1:] if index and index[0] is Ellipsis else index
        return self.tile.read(region, channel=self.channel)
