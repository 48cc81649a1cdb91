"""`Tileset`: the user-facing collection of placed tiles."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from tilefuse.errors import (
    EmptyTilesetError,
    GridMismatchError,
    IncompatibleTilesError,
    NotFoundError,
    ParameterError,
    StoreError,
)
from tilefuse.io.positions import parse_offsets as _parse_offsets
from tilefuse.layout import Layout, Overlap
from tilefuse.options import ExecOptions, FusionOptions, OutputOptions, with_overrides
from tilefuse.tile import Tile

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from tilefuse.blend import Blend
    from tilefuse.correction import Corrections
    from tilefuse.equalise import EdgeSeamReport, SeamReport
    from tilefuse.io.ome_zarr import MultiScaleGroup
    from tilefuse.labels import LabelMapping
    from tilefuse.objects import ObjectTable
    from tilefuse.register import RegistrationReport
    from tilefuse.surfaces import Surfaces

__all__ = ["Overlap", "Tileset"]

logger = logging.getLogger(__name__)


def _same_grid(a: Any, b: Any) -> bool:
    """Whether two output grids have the same voxel size, origin and shape."""
    vs = np.asarray(a.voxel_size, dtype=float)
    return (
        tuple(a.shape) == tuple(b.shape)
        and bool(np.allclose(vs, b.voxel_size, rtol=1e-6, atol=0))
        and bool(np.all(np.abs(np.subtract(a.origin, b.origin)) <= 1e-6 * vs))
    )


def _grid_text(g: Any) -> str:
    def f(v: Any) -> str:
        return "(" + ", ".join(f"{float(x):.6g}" for x in v) + ")"

    return (
        f"{tuple(int(s) for s in g.shape)} voxels of {f(g.voxel_size)} um "
        f"with voxel 0 centred at {f(g.origin)} um"
    )


class Tileset(Sequence[Tile]):
    """An ordered collection of placed tiles.

    Parameters
    ----------
    tiles : sequence of Tile
        At least one tile. All must have the same dimensionality (all 2D or
        all 3D), channel count and dtype. Their ``index`` is set to their
        position.
    voxel_size : array_like of 3 floats, optional
        The tileset's voxel size (z, y, x) in micrometres, used as the default
        output voxel size (default: the first tile's).

    Raises
    ------
    EmptyTilesetError
        If ``tiles`` is empty.
    IncompatibleTilesError
        If tiles mix 2D and 3D, channel counts or dtypes.
    """

    def __init__(self, tiles: Sequence[Tile], voxel_size: ArrayLike | None = None) -> None:
        tiles = list(tiles)
        if not tiles:
            msg = "a tileset needs at least one tile; got none"
            raise EmptyTilesetError(msg)
        _check_compatible(tiles)
        self._tiles = tuple(t if t.index == i else _reindex(t, i) for i, t in enumerate(tiles))
        vs = tiles[0].voxel_size if voxel_size is None else np.asarray(voxel_size, dtype=float)
        if vs.shape != (3,) or np.any(vs <= 0):
            msg = f"voxel_size must be 3 positive numbers (z, y, x), got {vs}"
            raise ParameterError(msg)
        self.voxel_size: NDArray[np.float64] = vs

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        arrays: Sequence[ArrayLike],
        offsets: ArrayLike,
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        *,
        names: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
    ) -> Tileset:
        """Tiles from arrays (numpy, zarr, dask, ...), positioned by offsets.

        Parameters
        ----------
        arrays : sequence of array_like
            ``(y, x)``, ``(z, y, x)`` or ``(c, z, y, x)`` each; read lazily by region.
        offsets : array_like of shape (n, 3) or (n, 2)
            World position (z, y, x) of each tile's voxel 0, in micrometres
            ((y, x) pairs are accepted for 2D tiles).
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres.
        names : sequence of str, optional
            Tile names (default ``tile_000``...).
        channels : sequence of str, optional
            Channel names shared by all tiles.
        """
        offs = _parse_offsets(offsets, len(arrays))
        names = list(names) if names is not None else [f"tile_{i:03d}" for i in range(len(arrays))]
        tiles = [
            Tile.from_array(a, o, voxel_size, name=n, index=i, channels=tuple(channels or ()))
            for i, (a, o, n) in enumerate(zip(arrays, offs, names, strict=True))
        ]
        return cls(tiles, voxel_size)

    @classmethod
    def from_tiff(
        cls,
        files: Sequence[str | os.PathLike[str]],
        offsets: ArrayLike,
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        *,
        skip_missing: bool = False,
    ) -> Tileset:
        """Tiles from TIFF files (read lazily), positioned by offsets in micrometres.

        Parameters
        ----------
        files : sequence of path
            One TIFF per tile.
        offsets : array_like of shape (n, 3)
            World position (z, y, x) of each tile's voxel 0, in micrometres.
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres.
        skip_missing : bool
            Drop tiles whose file does not exist (logged) instead of raising.

        Raises
        ------
        MissingTileError
            If a file does not exist and ``skip_missing`` is false.
        """
        from tilefuse.io.positions import file_tiles
        from tilefuse.io.tiff import TiffSource

        offs = _parse_offsets(offsets, len(files))
        return cls(file_tiles(files, offs, voxel_size, TiffSource, skip_missing), voxel_size)

    @classmethod
    def from_jp2(
        cls,
        files: Sequence[str | os.PathLike[str]],
        offsets: ArrayLike | str | os.PathLike[str],
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        *,
        components: Literal["z", "channels"] = "z",
        skip_missing: bool = False,
    ) -> Tileset:
        """Tiles from JPEG 2000 files, one per tile.

        Parameters
        ----------
        files : sequence of path
            ``.jp2`` / ``.j2k`` files, in the order of the offsets.
        offsets : array_like of shape (n, 3), or path
            Offsets (z, y, x) in micrometres, or a file: an exm ``.npy`` (row 0
            the tile size in pixels, x y z; then x y z micrometres per tile) or
            a CSV with columns z, y, x.
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres.
        components : {"z", "channels"}
            Whether image components are z planes (the exm layout) or channels.
        skip_missing : bool
            Drop absent files (logged) instead of raising.
        """
        from tilefuse.io.jp2 import Jp2Source
        from tilefuse.io.positions import file_tiles, offsets_from

        offs = offsets_from(offsets, len(files))
        return cls(
            file_tiles(files, offs, voxel_size, lambda f: Jp2Source(f, components), skip_missing),
            voxel_size,
        )

    @classmethod
    def from_hdf5(
        cls,
        path: str | os.PathLike[str],
        offsets: ArrayLike | str | os.PathLike[str],
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        *,
        datasets: Sequence[str] | None = None,
    ) -> Tileset:
        """Tiles from one HDF5 file holding one dataset per tile (e.g. CellPose masks).

        Parameters
        ----------
        path : str or PathLike
            The HDF5 file.
        offsets : array_like of shape (n, 3), or path
            Offsets (z, y, x) in micrometres, one per dataset in order, or an
            exm ``.npy`` / CSV offsets file (see `from_jp2`).
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres.
        datasets : sequence of str, optional
            Dataset names in tile order (default: every 2D/3D dataset,
            natural-sorted, so ``tile_2`` comes before ``tile_10``).
        """
        from tilefuse.io.h5 import open_hdf5

        return cls(open_hdf5(path, offsets, voxel_size, datasets=datasets), voxel_size)

    @classmethod
    def from_nd2(
        cls,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        timepoint: int = 0,
        stage_signs: ArrayLike | None = None,
        positions_um: ArrayLike | None = None,
    ) -> Tileset:
        """Tiles from ND2 files: every XY position of every file is one tile.

        Parameters
        ----------
        paths : path or sequence of paths
            One multi-position file, or several (single- or multi-position) files.
        timepoint : int
            The timepoint to read.
        stage_signs : array_like of 3 floats, optional
            Signs (z, y, x) applied to stage positions; default
            `tilefuse.io.nd2.DEFAULT_STAGE_SIGNS` (x flipped: on common Nikon
            setups the stage X axis runs against image x).
        positions_um : array_like of shape (n, 3), optional
            A position table (stage Z, Y, X in micrometres, one row per tile)
            used instead of the files' stage metadata (e.g. from a separate
            stage log); the signs still apply.

        Returns
        -------
        Tileset
            Voxel size from the files' calibration; channels named as in the file.
        """
        from tilefuse.io.nd2 import open_nd2

        return cls(
            open_nd2(paths, timepoint=timepoint, stage_signs=stage_signs, positions_um=positions_um)
        )

    @classmethod
    def from_ome_zarr(
        cls,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        level: int = 0,
        timepoint: int = 0,
    ) -> Tileset:
        """Tiles from OME-Zarr images (one multiscale image per tile), read lazily.

        Parameters
        ----------
        paths : path or sequence of paths
            Image groups; or one store whose child groups are images; or a
            folder of ``*.zarr`` images (natural-sorted).
        level : int
            Resolution level to read (voxel size and positions follow it).
        timepoint : int
            Timepoint for images with a ``t`` axis.
        """
        from tilefuse.io.ome_zarr_tiles import open_ome_zarr

        return cls(open_ome_zarr(paths, level=level, timepoint=timepoint))

    @classmethod
    def from_bigstitcher(
        cls,
        xml: str | os.PathLike[str],
        *,
        timepoint: int | None = None,
        angle: int | None = None,
        world_unit_um: ArrayLike | None = None,
    ) -> Tileset:
        """Tiles from a BigStitcher / BigDataViewer project (SpimData XML).

        Views sharing a ``tile`` attribute are the channels of one tile.
        Positions are the composed ViewRegistrations in micrometres. Pixels are
        read lazily through the XML's image loader (``bdv.hdf5``); a project
        whose images are absent or in another format still opens, and only
        reading pixels raises an error naming the image.

        Parameters
        ----------
        xml : str or PathLike
            The project file.
        timepoint : int, optional
            Default: the first timepoint.
        angle : int, optional
            Needed when a timepoint has views from several angles.
        world_unit_um : array_like of 3 floats, optional
            Micrometres per world unit (z, y, x), overriding the inference:
            a calibration transform gives an isotropic world (its unit on every
            axis); without one the world is BigDataViewer's pixel world (one
            voxel per axis, so the unit is the voxel size; a warning says so).
            A single number is refused (it would apply the x/y value to z).
            The unit used is kept in each tile's ``metadata["world_unit_um"]``
            and reused by `to_bigstitcher_xml`, `load_positions` and
            registration output.
        """
        from tilefuse.io.project import tiles_from_spimdata

        return cls(
            tiles_from_spimdata(xml, timepoint=timepoint, angle=angle, world_unit_um=world_unit_um)
        )

    def to_bdv(
        self,
        path: str | os.PathLike[str],
        *,
        fused: bool = False,
        options: FusionOptions | None = None,
        output_options: OutputOptions | None = None,
        exec_options: ExecOptions | None = None,
        blend: str | Blend | None = None,
        levels: int | None = None,
        chunks: Sequence[int] | None = None,
        compression: Literal["default", "fast", "archive", "none"] | None = None,
        name: str | None = None,
        overwrite: bool | None = None,
        workers: int | None = None,
        client: Any = None,
        progress: bool | None = None,
        format: Literal["hdf5", "n5"] = "hdf5",
    ) -> tuple[Path, Path]:
        """Export to BigDataViewer HDF5 (or N5) + XML: each tile as a setup, or the fused volume.

        Without ``fused``, tiles become setups with tile (and channel)
        attributes and their positions are written as their registration (for
        BigStitcher). With ``fused``, the tiles are fused block by block
        straight into the HDF5 file (one setup per channel; no intermediate
        store), then its pyramid is computed.

        Parameters
        ----------
        path : str or PathLike
            The ``.h5`` file, or the ``.n5`` folder (the ``.xml`` goes beside it).
        fused : bool
            Export the fused volume instead of the tiles.
        options, output_options, exec_options : optional
            The settings objects (see `fuse`). ``options`` applies only with
            ``fused``. Of `OutputOptions`, ``levels`` (a cap on BigDataViewer's
            proposal), ``chunks`` (HDF5 chunk), ``compression`` (gzip level),
            ``name`` (fused setup name) and ``overwrite`` apply.
        blend
            `FusionOptions.blend` (with ``fused``).
        levels, chunks, compression, name, overwrite
            `OutputOptions` fields.
        workers, client, progress
            `ExecOptions` fields: who fuses (with ``fused``) or reads the
            tiles' blocks (without; the file is written by this process).
        format : {"hdf5", "n5"}
            ``"n5"``: BigDataViewer's N5 layout (``bdv.n5`` loader) written with
            TensorStore (``pip install 'tilefuse[n5]'``): one file per chunk,
            so a cluster can write in parallel; every dtype stored natively.

        Returns
        -------
        (Path, Path)
            The ``.h5`` (or ``.n5``) and ``.xml`` files.

        Raises
        ------
        OutputExistsError
            If a file exists and ``overwrite`` is false.
        """
        out = with_overrides(
            output_options,
            OutputOptions,
            levels=levels,
            chunks=chunks,
            compression=compression,
            name=name,
            overwrite=overwrite,
        )
        ex = with_overrides(
            exec_options, ExecOptions, workers=workers, client=client, progress=progress
        )
        if not fused:
            if options is not None or blend is not None:
                msg = "fusion settings (options=, blend=) apply only with fused=True"
                raise ParameterError(msg)
            from tilefuse.io.project import tileset_to_bdv

            return tileset_to_bdv(self, path, out, format=format, execution=ex)
        from tilefuse.fuse import FusionPlan, fuse_tiles
        from tilefuse.writers import BdvWriter

        fusion = with_overrides(options, FusionOptions, blend=blend)
        plan = FusionPlan.from_options(self._tiles, fusion, voxel_size=self.voxel_size)
        writer = BdvWriter(path, out, format=format)
        return fuse_tiles(plan, writer, ex)  # type: ignore[no-any-return]

    def to_bigstitcher_xml(
        self,
        path: str | os.PathLike[str],
        *,
        image_path: str | os.PathLike[str] | None = None,
        name: str = "tilefuse registration",
        report: Any = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the tiles' placements as BigStitcher XML.

        For tiles read with `from_bigstitcher`, the original project is copied
        with everything in it kept (StitchingResults, interest points, unknown
        elements, prior transforms), and each moved tile gets one new
        translation ``<ViewTransform>`` named ``name`` at the top of its
        views' lists. Other tilesets get a new project whose image loader is
        the BDV file ``image_path`` (as written by `to_bdv`). A `register`
        report adds its pairwise links to ``<StitchingResults>`` (with the
        hashes BigStitcher checks), so BigStitcher can continue from them.
        """
        from tilefuse.io.project import tileset_to_xml

        return tileset_to_xml(
            self, path, image_path=image_path, name=name, report=report, overwrite=overwrite
        )

    def load_positions(
        self,
        xml: str | os.PathLike[str],
        *,
        timepoint: int | None = None,
        world_unit_um: ArrayLike | None = None,
    ) -> Tileset:
        """A copy with placements from a BigStitcher XML (e.g. after registering in Fiji).

        Tiles are matched by their project tile id when they came from a
        project, otherwise in order; counts and shapes must agree. World
        units: ``world_unit_um`` (z, y, x) when given, else the unit the tiles
        were opened with (`from_bigstitcher`), else the project's own.

        Raises
        ------
        IncompatibleTilesError
            If the project's tiles do not correspond to these.
        """
        from tilefuse.io.project import load_positions

        tiles = load_positions(self._tiles, xml, timepoint=timepoint, world_unit_um=world_unit_um)
        return Tileset(tiles, self.voxel_size)

    @classmethod
    def from_tileconfig(
        cls,
        path: str | os.PathLike[str],
        voxel_size: ArrayLike = (1.0, 1.0, 1.0),
        *,
        skip_missing: bool = False,
    ) -> Tileset:
        """Tiles listed in a Fiji ``TileConfiguration(.registered).txt``.

        Positions in the file are pixels (x, y[, z]); they are converted to
        (z, y, x) micrometres with ``voxel_size``. For ``dim = 2`` files, tiles
        are 2D images (z = 1).

        Parameters
        ----------
        path : str or PathLike
            The TileConfiguration file; image paths are relative to its folder.
        voxel_size : array_like of 3 floats
            Voxel size (z, y, x) in micrometres (default 1: positions stay pixels).
        skip_missing : bool
            Drop listed tiles whose file does not exist (logged) instead of raising.

        Raises
        ------
        TileConfigError
            If the file is malformed (the message names the line).
        MissingTileError
            If a listed tile does not exist and ``skip_missing`` is false.
        """
        from tilefuse.io.tileconfig import open_tileconfig

        vs = np.asarray(voxel_size, dtype=float)
        return cls(open_tileconfig(path, vs, skip_missing=skip_missing), vs)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, format: str | None = None, **options: Any
    ) -> Tileset:
        """Open a tileset from a path, detecting its format by suffix and content.

        The formats are the readers of `tilefuse.io.registry` (``tilefuse info
        --help`` lists them), tried in order; the first that recognises the path
        opens it. Built in:

        ======================================  =====================================
        input                                   reader (format name)
        ======================================  =====================================
        ``TileConfiguration*.txt``, or a        ``tileconfig`` (`from_tileconfig`;
        folder holding one                      the ``.registered.txt`` is preferred)
        MIST ``global-positions-*.txt``, or a   ``mist`` (`tilefuse.io.mist`)
        folder holding one
        ``*.xml`` (BigStitcher / BDV project)   ``bigstitcher`` (`from_bigstitcher`)
        or the ``.h5`` beside it
        ``*.nd2``, or a folder of them          ``nd2`` (`from_nd2`)
        an OME-Zarr image / store of images,    ``ome-zarr`` (`from_ome_zarr`)
        or a folder of ``*.zarr`` images
        a folder of ``.tif``/``.jp2`` tiles     ``positions`` (`tilefuse.io.positions`)
        with a positions ``.csv`` or exm
        ``.npy``, or that positions file
        ``*.h5`` / ``*.hdf5`` with ``offsets=``  ``hdf5`` (`from_hdf5`, one dataset per tile)
        ======================================  =====================================

        Parameters
        ----------
        path : str or PathLike
            The input.
        format : str, optional
            A reader's name, to skip detection.
        **options
            Go to the reader (e.g. ``voxel_size=``, ``timepoint=``, ``positions=``).

        Raises
        ------
        UnsupportedFormatError
            If no reader recognises the path (the message lists the formats).
        MissingTileError
            If the path does not exist.
        ReaderOptionError
            If the reader does not take one of ``options``.
        """
        from tilefuse.io.registry import open_tiles

        tiles = open_tiles(Path(path), format=format, **options)
        return tiles if isinstance(tiles, Tileset) else cls(tiles)

    # -- sequence protocol --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tiles)

    @overload
    def __getitem__(self, i: int) -> Tile: ...
    @overload
    def __getitem__(self, i: slice) -> Tileset: ...
    def __getitem__(self, i: int | slice) -> Tile | Tileset:
        if isinstance(i, slice):
            return Tileset(self._tiles[i], self.voxel_size)
        return self._tiles[i]

    def __iter__(self) -> Iterator[Tile]:
        return iter(self._tiles)

    def __repr__(self) -> str:
        lo, hi = self.bounds
        return (
            f"Tileset({len(self)} tiles, {self.n_channels} channel(s), dtype={self.dtype}, "
            f"voxel_size={tuple(float(v) for v in self.voxel_size)}, "
            f"extent_um={tuple(round(float(v), 3) for v in hi - lo)})"
        )

    # -- properties ---------------------------------------------------------------------
    @property
    def tiles(self) -> tuple[Tile, ...]:
        """The tiles, in order."""
        return self._tiles

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype shared by all tiles."""
        return self._tiles[0].dtype

    @property
    def n_channels(self) -> int:
        """Channels per tile."""
        return self._tiles[0].n_channels

    @property
    def is_2d(self) -> bool:
        """Whether all tiles are single planes (z = 1)."""
        return all(t.shape[0] == 1 for t in self._tiles)

    @property
    def offsets(self) -> NDArray[np.float64]:
        """Offsets (n, 3), (z, y, x) micrometres."""
        return self._layout.placement["offset"].copy()

    @property
    def bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World box ``(lo, hi)`` covering every tile."""
        return self._layout.bounds

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        *,
        channel: int = 0,
        downsample: tuple[int, int, int] | None = None,
        min_ncc: float = 0.5,
        n_peaks: int = 5,
        preset: Literal["strict", "relaxed"] = "strict",
        thresholds: tuple[float, float] | None = None,
        workers: int | None = None,
        client: Any = None,
        progress: bool = False,
    ) -> tuple[Tileset, RegistrationReport]:
        """Register the tiles (pairwise phase correlation + global optimisation).

        Returns ``(registered_tileset, report)``; see `tilefuse.register.register`
        for the parameters.
        """
        from tilefuse.register import register

        tiles, report = register(
            self._tiles,
            voxel_size=self.voxel_size,
            channel=channel,
            downsample=downsample,
            min_ncc=min_ncc,
            n_peaks=n_peaks,
            preset=preset,
            thresholds=thresholds,
            workers=workers,
            client=client,
            progress=progress,
        )
        return Tileset(tiles, self.voxel_size), report

    # -- intensity, previews, surfaces ------------------------------------------------------
    def intensity_range(
        self,
        p: Sequence[float] = (1.0, 99.9),
        *,
        max_samples: int = 2_000_000,
        planes_per_tile: int = 4,
        seed: int = 0,
    ) -> NDArray[Any]:
        """Global intensity percentiles ``(c, 2)`` from a bounded sample of all tiles.

        See `tilefuse.intensity.intensity_range` for the parameters.
        """
        from tilefuse.intensity import intensity_range

        return intensity_range(
            self._tiles, p, max_samples=max_samples, planes_per_tile=planes_per_tile, seed=seed
        )

    def scale_intensity(
        self,
        low: ArrayLike | None = None,
        high: ArrayLike | None = None,
        *,
        p: Sequence[float] = (1.0, 99.9),
    ) -> Tileset:
        """The tiles mapped lazily to uint8 between ``low`` and ``high`` (per channel).

        Without ``low``/``high`` the global percentiles ``p`` are used. The
        source files are never changed; scaling happens on read.
        """
        from tilefuse.intensity import ScaledSource

        if low is None or high is None:
            rng = self.intensity_range(p)
            low = rng[:, 0] if low is None else low
            high = rng[:, 1] if high is None else high
        tiles = [
            dataclasses.replace(t, source=ScaledSource(t.source, low, high)) for t in self._tiles
        ]
        return Tileset(tiles, self.voxel_size)

    def estimate_corrections(
        self,
        *,
        channels: Sequence[int] | None = None,
        flatfield: bool | ArrayLike | str | os.PathLike[str] = True,
        darkfield: bool | ArrayLike | str | os.PathLike[str] = False,
        gains: bool = True,
        offsets: bool = False,
        reference: int | None = None,
        max_planes: int = 200,
        min_ncc: float = 0.3,
        refine: bool = True,
        ramp: str = "auto",
        seed: int = 0,
    ) -> Corrections:
        """Estimate flat-/dark-field profiles and per-tile gains from the tiles themselves.

        See `tilefuse.correction.estimate_corrections` for the parameters.
        Apply the result with `correct`.
        """
        from tilefuse.correction import estimate_corrections

        return estimate_corrections(
            self._tiles,
            self.overlaps(),
            channels=channels,
            flatfield=flatfield,
            darkfield=darkfield,
            gains=gains,
            offsets=offsets,
            reference=reference,
            max_planes=max_planes,
            min_ncc=min_ncc,
            refine=refine,
            ramp=ramp,
            seed=seed,
        )

    def correct(
        self,
        corrections: Corrections | str | os.PathLike[str] | None = None,
        *,
        flatfield: ArrayLike | str | os.PathLike[str] | None = None,
        darkfield: ArrayLike | str | os.PathLike[str] | None = None,
        gains: ArrayLike | None = None,
        offsets: ArrayLike | None = None,
    ) -> Tileset:
        """The tiles with intensity corrections applied lazily on read.

        Every voxel read becomes ``gain * (raw - darkfield) / flatfield + offset``;
        fusion, previews, registration and export all see corrected pixels,
        in the tiles' dtype (integers rounded and clipped; see
        `tilefuse.correction.clipped_voxels`).

        Parameters
        ----------
        corrections : Corrections, path or "auto", optional
            From `estimate_corrections` or `Corrections.save` (``.npz``);
            ``"auto"`` estimates them with the defaults.
        flatfield, darkfield : array_like or path, optional
            ``(y, x)`` or ``(c, y, x)`` profiles (array, ``.npy`` or TIFF);
            override those in ``corrections``. Flat-fields are normalised to mean 1.
        gains, offsets : array_like (n_tiles,) or (n_tiles, c), optional
            Per-tile linear map; override those in ``corrections``.

        Raises
        ------
        CorrectionError
            If a profile has the wrong shape, zeros or non-finite values, or
            the gains belong to other tiles.
        """
        from tilefuse.correction import Corrections, correct_tiles, load_profile

        if isinstance(corrections, str) and corrections == "auto":
            corrections = self.estimate_corrections()
        elif isinstance(corrections, (str, os.PathLike)):
            corrections = Corrections.load(corrections)
        corr = dataclasses.replace(corrections) if corrections else Corrections()
        shape = (self.n_channels, *self._tiles[0].shape[1:])
        if flatfield is not None:
            corr.flatfield, corr.info["flatfield_source"] = load_profile(
                flatfield, shape, "flatfield"
            )
        if darkfield is not None:
            corr.darkfield, corr.info["darkfield_source"] = load_profile(
                darkfield, shape, "darkfield"
            )
        for name, v in (("gains", gains), ("offsets", offsets)):
            if v is not None:
                a = np.asarray(v, dtype=float)
                a = a[:, None] if a.ndim == 1 else a
                setattr(corr, name, np.broadcast_to(a, (len(self), self.n_channels)).copy())
        if not corr.tile_names:
            corr.tile_names = tuple(t.name for t in self._tiles)
        return Tileset(correct_tiles(self._tiles, corr), self.voxel_size)

    def seam_metric(
        self, channel: int = 0, *, distance: int = 1, max_planes: int = 8
    ) -> SeamReport:
        """How visible tile boundaries are (1 = seamless); see `tilefuse.equalise.seam_metric`."""
        from tilefuse.equalise import seam_metric

        return seam_metric(
            self._tiles, self.overlaps(), channel, distance=distance, max_planes=max_planes
        )

    def fused_seam_metric(
        self,
        fused: Any,
        channel: int = 0,
        *,
        distance: int = 1,
        control: int = 3,
        max_planes: int = 8,
    ) -> EdgeSeamReport:
        """The seam metric of an already fused image of this tileset, at the tile edges.

        Parameters
        ----------
        fused : array_like, MultiScaleGroup or path
            An OME-Zarr store (path or `MultiScaleGroup`; its level 0 with its
            own origin and voxel size) or an array ``(c, z, y, x)`` /
            ``(z, y, x)`` on this tileset's covering grid (what `fuse`
            returns in memory).
        channel, distance, control, max_planes
            See `tilefuse.equalise.fused_seam_metric`.

        Returns
        -------
        EdgeSeamReport
        """
        from tilefuse.equalise import fused_seam_metric
        from tilefuse.fuse import OutputGrid

        if isinstance(fused, (str, os.PathLike)):
            from tilefuse.io.ome_zarr import MultiScaleGroup

            fused = MultiScaleGroup.open(fused)
        if hasattr(fused, "level_origin"):
            image, origin = fused[0], np.asarray(fused.level_origin(0), dtype=float)
            vs = np.asarray(fused.level_voxel_size(0), dtype=float)
        else:
            grid = OutputGrid.covering(self._tiles, self.voxel_size)
            image, origin, vs = fused, np.asarray(grid.origin), np.asarray(grid.voxel_size)
        start = origin - vs / 2  # the lower boundary of output voxel 0
        boxes = np.array([[(t.box[0] - start) / vs, (t.box[1] - start) / vs] for t in self._tiles])
        return fused_seam_metric(
            image, boxes, channel, distance=distance, control=control, max_planes=max_planes
        )

    def preview(
        self,
        *,
        z: float | None = None,
        projection: Literal["max"] | None = None,
        downsample: int = 4,
        blend: str = "overwrite",
    ) -> NDArray[Any]:
        """A 2D mosaic at a world z, or a max projection; see `tilefuse.intensity.preview`."""
        from tilefuse.intensity import preview

        return preview(
            self._tiles,
            voxel_size=self.voxel_size,
            z=z,
            projection=projection,
            downsample=downsample,
            blend=blend,
        )

    def surfaces(
        self,
        threshold: float,
        *,
        channel: int = 0,
        coverslip: Literal["top", "bottom"] = "bottom",
        block_rows: int = 64,
    ) -> list[Surfaces]:
        """Top, bottom and contact height maps per tile (`tilefuse.surfaces.tile_surfaces`)."""
        from tilefuse.surfaces import tile_surfaces

        return [
            tile_surfaces(t, threshold, channel=channel, coverslip=coverslip, block_rows=block_rows)
            for t in self._tiles
        ]

    def centroids(
        self,
        *,
        block: tuple[int, int, int] = (64, 512, 512),
        workers: int | None = None,
        progress: bool = False,
    ) -> dict[int, ObjectTable]:
        """Per label tile: its objects' centroids etc. in world micrometres.

        Returns ``{tile index: ObjectTable}`` computed block-wise from each
        tile (`tilefuse.objects.object_table` with the tile's voxel size and
        offset). For global objects use `dedup_labels` / `fuse_labels` first.
        """
        from tilefuse.objects import object_table

        out: dict[int, ObjectTable] = {}
        for t in self._tiles:
            if not t.is_translation:
                msg = f"centroids need axis-aligned tiles; {t.name!r} is rotated"
                raise IncompatibleTilesError(msg)
            out[t.index] = object_table(
                _TileLabels(t),
                voxel_size=t.voxel_size,
                origin=t.offset,
                block=block,
                workers=workers,
                progress=progress,
            )
        return out

    def scale_offsets(self, factors: ArrayLike) -> Tileset:
        """A copy with every offset multiplied by ``factors`` (z, y, x) (re-calibration)."""
        f = np.broadcast_to(np.asarray(factors, dtype=float), (3,))
        return self.with_offsets(self.offsets * f)

    def select_channels(self, channels: Sequence[int | str]) -> Tileset:
        """A tileset with only some channels (given by index or name), in that order."""
        names = list(self._tiles[0].channels)
        idx = []
        for c in channels:
            if isinstance(c, str):
                if c not in names:
                    msg = f"no channel {c!r}; channels are {names}"
                    raise NotFoundError(msg)
                idx.append(names.index(c))
            else:
                idx.append(int(c))
        return Tileset([t.select_channels(idx) for t in self._tiles], self.voxel_size)

    def downscale(self, factors: Any, method: Literal["mean", "stride"] = "mean") -> Tileset:
        """Every tile read at lower resolution; voxel size and positions stay consistent.

        See `Tile.downscale`. Nothing is read until pixels are requested.
        """
        f = np.broadcast_to(np.asarray(factors, dtype=float), (3,))
        return Tileset([t.downscale(factors, method) for t in self._tiles], self.voxel_size * f)

    def with_offsets(self, offsets: ArrayLike) -> Tileset:
        """Copy with new tile offsets (n, 3) in micrometres."""
        offs = _parse_offsets(offsets, len(self))
        return Tileset(
            [t.with_offset(o) for t, o in zip(self._tiles, offs, strict=True)], self.voxel_size
        )

    # -- overlaps -----------------------------------------------------------------------
    def overlaps(self) -> list[Overlap]:
        """Every pair of overlapping tiles, once each (``i < j``).

        Uses a uniform grid index over the tiles' world boxes, so cost grows with
        the number of tiles and true neighbours, not with its square; boxes
        and voxel slices of axis-aligned tiles are computed vectorised
        (`tilefuse.layout.Layout`).

        Returns
        -------
        list of Overlap
        """
        return self._layout.overlaps()

    @cached_property
    def _layout(self) -> Layout:
        return Layout(self._tiles)

    # -- fusion -------------------------------------------------------------------------
    @overload
    def fuse(self, output: None = None, **kwargs: Any) -> NDArray[Any]: ...
    @overload
    def fuse(self, output: str | os.PathLike[str], **kwargs: Any) -> MultiScaleGroup: ...
    def fuse(  # type: ignore[misc]  # the overloads only say what the output argument returns
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        options: FusionOptions | None = None,
        output_options: OutputOptions | None = None,
        exec_options: ExecOptions | None = None,
        blend: str | Blend | None = None,
        blend_width: float | ArrayLike | None = None,
        priority: Literal["last", "first"] | None = None,
        voxel_size: ArrayLike | None = None,
        interpolation: Literal["linear", "nearest"] | None = None,
        levels: int | None = None,
        chunks: Sequence[int] | None = None,
        shards: Sequence[int] | bool | None = None,
        version: Literal["0.4", "0.5"] | None = None,
        compression: Literal["default", "fast", "archive", "none"] | None = None,
        name: str | None = None,
        overwrite: bool | None = None,
        allow_large_output: bool | None = None,
        workers: int | None = None,
        client: Any = None,
        progress: bool | None = None,
    ) -> NDArray[Any] | MultiScaleGroup:
        """Fuse the tiles into one volume, in memory or streamed into OME-Zarr.

        Settings come in three objects, each field declared (with its default
        and meaning) once in `tilefuse.options`: ``options`` (`FusionOptions`:
        what is computed), ``output_options`` (`OutputOptions`: how it is
        stored) and ``exec_options`` (`ExecOptions`: how the work runs). Every
        other keyword is a field of one of them and overrides it; a keyword
        left at None keeps the object's value (or the field's default).

        Parameters
        ----------
        output : str or PathLike, optional
            An OME-Zarr folder to write block by block. When omitted, the fused
            volume is returned as an in-memory array (``chunks`` is then the
            work block).
        options, output_options, exec_options : optional
            The settings objects (defaults: the dataclasses' defaults).
        blend, blend_width, priority, voxel_size, interpolation
            `FusionOptions` fields: blend mode (``"linear"`` by default; see
            `tilefuse.blend.blend_names`), ramp width in micrometres, which tile
            wins for ``overwrite``, output voxel size, and how tiles are sampled
            at output voxel centres between their own (``"linear"``, in float;
            ``"nearest"``, values copied). Output voxel ``j`` takes the tiles'
            values at its centre (see the Geometry guide page).
        levels, chunks, shards, version, compression, name, overwrite, allow_large_output
            `OutputOptions` fields (``levels`` defaults to 1 here).
        workers, client, progress
            `ExecOptions` fields.

        Returns
        -------
        ndarray or MultiScaleGroup
            ``(z, y, x)`` (or ``(c, z, y, x)`` for several channels) in the
            tiles' dtype; or the written group. Voxels no tile covers are 0.

        Raises
        ------
        OutputExistsError
            If ``output`` exists and ``overwrite`` is false (an interrupted
            fusion of the same tiles and settings is resumed instead).
        ResumeMismatchError
            If ``output`` is an unfinished fusion of other inputs or settings
            (the message names what changed), or of more levels.
        OutputOverlapError
            If ``output`` is, contains or lies inside an input file or store.
        OutputTooLargeError
            If the output grid is implausibly large (see ``allow_large_output``).
        StoreLockedError
            If another live process is writing ``output`` (the message names it).
        CorruptFileError
            If a tile cannot be read (checked before anything is created).
        """
        from tilefuse.fuse import FusionPlan, fuse_tiles
        from tilefuse.writers import MemoryWriter, OmeZarrWriter

        fusion = with_overrides(
            options,
            FusionOptions,
            blend=blend,
            blend_width=blend_width,
            priority=priority,
            voxel_size=voxel_size,
            interpolation=interpolation,
        )
        out = with_overrides(
            output_options,
            OutputOptions,
            levels=levels,
            chunks=chunks,
            shards=shards,
            version=version,
            compression=compression,
            name=name,
            overwrite=overwrite,
            allow_large_output=allow_large_output,
        )
        ex = with_overrides(
            exec_options, ExecOptions, workers=workers, client=client, progress=progress
        )
        plan = FusionPlan.from_options(self._tiles, fusion, voxel_size=self.voxel_size)
        writer = MemoryWriter(out) if output is None else OmeZarrWriter(output, out)
        result = fuse_tiles(plan, writer, ex)
        _record_corrections(result, self._tiles)
        return result  # type: ignore[no-any-return]

    # -- labels -------------------------------------------------------------------------
    def dedup_labels(
        self,
        *,
        min_overlap_voxels: int = 1,
        min_overlap_fraction: float = 0.5,
        mutual_best: bool = False,
        workers: int | None = None,
        client: Any = None,
        progress: bool = False,
    ) -> LabelMapping:
        """Give every object spanning several label tiles one global ID.

        See `tilefuse.labels.dedup_labels` for the rules and the returned mapping.
        """
        from tilefuse.labels import dedup_labels

        return dedup_labels(
            self._tiles,
            min_overlap_voxels=min_overlap_voxels,
            min_overlap_fraction=min_overlap_fraction,
            mutual_best=mutual_best,
            workers=workers,
            client=client,
            progress=progress,
        )

    def relabel(self, mapping: LabelMapping) -> Tileset:
        """The tiles reading global IDs from ``mapping`` (from `dedup_labels`), lazily.

        Raises
        ------
        LabelError
            If ``mapping`` was computed on other tiles.
        """
        return Tileset(mapping.apply(self._tiles), self.voxel_size)

    def fuse_labels(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        mapping: LabelMapping | None = None,
        rule: str | Blend | None = None,
        resample: Literal["nearest"] | None = None,
        options: FusionOptions | None = None,
        output_options: OutputOptions | None = None,
        exec_options: ExecOptions | None = None,
        levels: int | None = None,
        chunks: Sequence[int] | None = None,
        shards: Sequence[int] | bool | None = None,
        version: Literal["0.4", "0.5"] | None = None,
        compression: Literal["default", "fast", "archive", "none"] | None = None,
        name: str | None = None,
        overwrite: bool | None = None,
        allow_large_output: bool | None = None,
        workers: int | None = None,
        client: Any = None,
        progress: bool | None = None,
    ) -> NDArray[Any] | MultiScaleGroup:
        """Fuse label tiles without blending (each voxel keeps one tile's label).

        Labels are never interpolated: each output voxel takes the label of
        the tile voxel whose extent holds its centre (nearest neighbour, the
        same voxel correspondence `dedup_labels` links with), so the output
        holds only input IDs, at fractional offsets, other voxel sizes and
        rotations alike.

        Parameters
        ----------
        output : str or PathLike, optional
            An existing OME-Zarr image written by `fuse` (the labels go to its
            ``labels/<name>`` group, on the image's grid, with as many levels
            as the image), or a new path (a standalone multiscale label image),
            or None for an in-memory array.
        mapping : LabelMapping, optional
            Apply this mapping (from `dedup_labels`) lazily while reading.
        rule : str, optional
            The blend mode (overrides ``options.blend``); it must be label-safe
            (`tilefuse.blend.label_safe_names`). Default ``"centre"``: each
            voxel from the covering tile whose centre is nearest (a Voronoi cut
            through overlaps); ``"overwrite"``: the last tile.
        resample : {"nearest"}, optional
            When ``output`` is an existing image whose grid (voxel size,
            origin, shape) differs from the grid the label tiles make, the
            labels are refused (`GridMismatchError`, naming both grids) unless
            this is ``"nearest"``: then they are placed on the image's grid by
            nearest neighbour.
        options, output_options, exec_options : optional
            The settings objects (see `fuse`); ``options`` defaults to
            ``FusionOptions(blend="centre")``.
        levels, chunks, shards, version, compression, name, overwrite, allow_large_output
            `OutputOptions` fields. ``name`` (default ``"labels"``) is the label
            image name inside ``labels/``; ``levels`` (mode downsampling;
            background never wins a tie) defaults to the image's level count,
            or 1 for a new store.
        workers, client, progress
            `ExecOptions` fields.

        Returns
        -------
        ndarray or MultiScaleGroup
        """
        from tilefuse.blend import get_blend, label_safe_names
        from tilefuse.fuse import FusionPlan, OutputGrid, fuse_tiles
        from tilefuse.io.ome_zarr import MultiScaleGroup
        from tilefuse.labels import check_label_dtype
        from tilefuse.writers import MemoryWriter, OmeZarrLabelsWriter, OmeZarrWriter

        fusion = with_overrides(options or FusionOptions(blend="centre"), FusionOptions, blend=rule)
        fusion = dataclasses.replace(fusion, interpolation="nearest")  # labels: never interpolated
        if resample not in (None, "nearest"):
            msg = f"resample must be None or 'nearest', got {resample!r}"
            raise ParameterError(msg)
        if not get_blend(fusion.blend).label_safe:
            msg = f"labels must be fused with one of {label_safe_names()}, not {fusion.blend!r}"
            raise ParameterError(msg)
        out = with_overrides(
            output_options,
            OutputOptions,
            levels=levels,
            chunks=chunks,
            shards=shards,
            version=version,
            compression=compression,
            name=name,
            overwrite=overwrite,
            allow_large_output=allow_large_output,
        )
        if out.name is None:
            out = dataclasses.replace(out, name="labels")
        ex = with_overrides(
            exec_options, ExecOptions, workers=workers, client=client, progress=progress
        )
        check_label_dtype(self.dtype, "fuse_labels")
        ts = self.relabel(mapping) if mapping is not None else self
        image = None
        if output is not None and Path(output).exists():
            try:
                image = MultiScaleGroup.open(output, mode="r+")
            except StoreError:
                image = None
        if image is None or image.kind != "image":
            plan = FusionPlan.from_options(ts.tiles, fusion, voxel_size=ts.voxel_size)
            writer: Any = (
                MemoryWriter(out) if output is None else OmeZarrWriter(output, out, kind="label")
            )
            return fuse_tiles(plan, writer, ex)  # type: ignore[no-any-return]
        grid = OutputGrid(
            tuple(float(v) for v in image.origin),  # type: ignore[arg-type]
            tuple(float(v) for v in image.voxel_size),  # type: ignore[arg-type]
            tuple(int(v) for v in image[0].shape[-3:]),  # type: ignore[arg-type]
        )
        own = OutputGrid.covering(ts.tiles, ts.voxel_size)
        if resample is None and not _same_grid(own, grid):
            msg = (
                f"fusing labels into {image.path}: the image grid is {_grid_text(grid)}, the label "
                f"tiles make {_grid_text(own)}; place the label tiles like the image's tiles "
                "(same voxel size and positions, e.g. --voxel-size), or pass "
                "resample='nearest' (CLI --resample-nearest) to resample them onto the "
                "image grid by nearest neighbour"
            )
            raise GridMismatchError(msg)
        plan = FusionPlan.from_options(ts.tiles, fusion, grid=grid)
        return fuse_tiles(plan, OmeZarrLabelsWriter(image, out.name or "labels", out), ex)  # type: ignore[no-any-return]

    def map_tiles(
        self,
        func: Callable[[NDArray[Any]], NDArray[Any]],
        *,
        store: str | os.PathLike[str] | None = None,
        dtype: Any = None,
        block: tuple[int, int, int] | None = None,
        halo: int = 0,
        merge_blocks: bool = True,
        workers: int | None = None,
        progress: bool = False,
    ) -> Tileset:
        """Apply ``func`` (e.g. a segmentation) to every tile; results staged to zarr.

        See `tilefuse.segment.map_tiles` for the parameters. Returns the same
        tiles and placements, reading the results lazily.
        """
        from tilefuse.segment import map_tiles

        tiles = map_tiles(
            self._tiles,
            func,
            store=store,
            dtype=dtype,
            block=block,
            halo=halo,
            merge_blocks=merge_blocks,
            workers=workers,
            progress=progress,
        )
        return Tileset(tiles, self.voxel_size)

    def local_to_global(self, points: ArrayLike) -> NDArray[np.float64]:
        """World positions (z, y, x) in micrometres of tile-local voxel points.

        Parameters
        ----------
        points : array_like of shape (n, 4)
            Rows ``(tile_index, z, y, x)`` in the tile's voxel indices (may be
            fractional, e.g. centroids); index ``i`` is the centre of voxel
            ``i`` (the tile's affine maps voxel centres).

        Returns
        -------
        ndarray of shape (n, 3)
        """
        p = np.atleast_2d(np.asarray(points, dtype=float))
        if p.shape[1] != 4:
            msg = f"points must be rows (tile, z, y, x); got shape {p.shape}"
            raise ParameterError(msg)
        idx = p[:, 0].astype(int)
        if np.any(idx < 0) or np.any(idx >= len(self)) or np.any(idx != p[:, 0]):
            msg = f"tile indices must be integers in [0, {len(self)}); got {np.unique(p[:, 0])}"
            raise ParameterError(msg)
        aff = self._layout.placement["affine"][idx]
        return np.einsum("nij,nj->ni", aff[:, :3, :3], p[:, 1:]) + aff[:, :3, 3]

    def summary(self) -> dict[str, Any]:
        """A plain-dict description (used by ``tilefuse info``)."""
        lo, hi = self.bounds
        return {
            "tiles": len(self),
            "channels": list(self._tiles[0].channels),
            "dtype": str(self.dtype),
            "voxel_size_um": [float(v) for v in self.voxel_size],
            "extent_um": [float(v) for v in hi - lo],
            "overlaps": len(self.overlaps()),
            **_selection_summary(self._tiles),
            "tile_list": [
                {"name": t.name, "shape": list(t.shape), "offset_um": [float(v) for v in t.offset]}
                for t in self._tiles
            ],
        }


def _selection_summary(tiles: Sequence[Tile]) -> dict[str, Any]:
    """What the input holds beyond the selection: timepoints and angles, when the reader says."""
    out: dict[str, Any] = {}
    if all(t.metadata.get("unit") == "pixel" for t in tiles):
        out["unit"] = "pixel"  # a voxel size without a unit: lengths are not micrometres
    meta = tiles[0].metadata
    for many, one in (("timepoints", "timepoint"), ("angles", "angle")):
        if many in meta:
            out[many] = list(meta[many])
            out[one] = meta.get(one)
    return out


def _record_corrections(out: Any, tiles: Sequence[Tile]) -> None:
    """Write the tiles' intensity corrections into a fused store's metadata; log clipping."""
    from tilefuse.correction import METADATA_KEY, clipped_voxels

    per_tile = {t.name: t.metadata[METADATA_KEY] for t in tiles if METADATA_KEY in t.metadata}
    if not per_tile:
        return
    clipped = clipped_voxels(tiles)
    if clipped:
        logger.warning(
            "intensity correction clipped %d voxel reads to the %s range", clipped, tiles[0].dtype
        )
    if not isinstance(out, np.ndarray):
        out.set_attribute(METADATA_KEY, {"tiles": per_tile, "clipped_voxel_reads": clipped})


def _reindex(tile: Tile, i: int) -> Tile:
    return dataclasses.replace(tile, index=i)


class _TileLabels:
    """A label tile as a sliceable (z, y, x) array for `object_table`."""

    def __init__(self, tile: Tile) -> None:
        self.tile, self.shape, self.dtype = tile, tile.shape, tile.dtype

    def __getitem__(self, index: Any) -> NDArray[Any]:
        region = index[1:] if index and index[0] is Ellipsis else index
        return self.tile.read(region, channel=0)


def _check_compatible(tiles: Sequence[Tile]) -> None:
    first = tiles[0]
    for t in tiles[1:]:
        if (t.shape[0] == 1) != (first.shape[0] == 1):
            msg = (
                f"mixed dimensionality: tile {first.name!r} has shape {first.shape} and "
                f"tile {t.name!r} has shape {t.shape}; use all 2D or all 3D tiles"
            )
            raise IncompatibleTilesError(msg)
        if t.n_channels != first.n_channels:
            msg = (
                f"tile {t.name!r} has {t.n_channels} channel(s), "
                f"tile {first.name!r} has {first.n_channels}"
            )
            raise IncompatibleTilesError(msg)
        if t.dtype != first.dtype:
            msg = f"tile {t.name!r} is {t.dtype}, tile {first.name!r} is {first.dtype}"
            raise IncompatibleTilesError(msg)
