"""tilefuse: stitch overlapping 3D microscope tiles into one fused, labelled volume."""

from __future__ import annotations

from tilefuse._version import __version__
from tilefuse.errors import (
    EmptyTilesetError,
    IncompatibleTilesError,
    LabelError,
    MissingTileError,
    OutputExistsError,
    StoreError,
    TileConfigError,
    TilefuseError,
    UnsupportedFormatError,
)
from tilefuse.io.ome_zarr import MultiScaleGroup
from tilefuse.labels import LabelMapping, dedup_labels
from tilefuse.merge import merge_tile_labels
from tilefuse.options import ExecOptions, FusionOptions, OutputOptions
from tilefuse.pyramid import downsample
from tilefuse.source import ArraySource, PixelSource
from tilefuse.tile import Tile
from tilefuse.tileset import Overlap, Tileset

__all__ = [
    "ArraySource",
    "EmptyTilesetError",
    "ExecOptions",
    "FusionOptions",
    "IncompatibleTilesError",
    "LabelError",
    "LabelMapping",
    "MissingTileError",
    "MultiScaleGroup",
    "OutputExistsError",
    "OutputOptions",
    "Overlap",
    "PixelSource",
    "StoreError",
    "Tile",
    "TileConfigError",
    "TilefuseError",
    "Tileset",
    "UnsupportedFormatError",
    "__version__",
    "dedup_labels",
    "downsample",
    "merge_tile_labels",
]
