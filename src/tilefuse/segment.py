"""Segment, then stitch: apply a function (a segmentation) to every tile, staged to zarr.

`map_tiles` runs ``func`` on each tile, either on the whole tile or block by
block with a halo (like ``dask.array.map_overlap`` / harpy's ``map_image``),
writes each result once to a zarr store, and returns tiles with the same
placements that read those results lazily (`Tileset.map_tiles` wraps them in a
`Tileset`): ready for `dedup_labels`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from tilefuse.errors import OutputExistsError, ParameterError
from tilefuse.parallel import imap_unordered
from tilefuse.source import ArraySource

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

    from tilefuse.tile import Tile

__all__ = ["map_tiles"]

logger = logging.getLogger(__name__)


class _TileTask:
    def __init__(
        self,
        tiles: Sequence[Tile],
        func: Callable[[NDArray[Any]], NDArray[Any]],
        group: zarr.Group,
        dtype: Any,
        block: tuple[int, int, int] | None,
        halo: int,
        merge_blocks: bool,
    ) -> None:
        self.tiles, self.func, self.group, self.dtype = tiles, func, group, dtype
        self.block, self.halo, self.merge_blocks = block, halo, merge_blocks

    def _apply(self, tile: Tile, region: tuple[slice, ...]) -> NDArray[Any]:
        data = tile.read(region)
        out = np.asarray(self.func(data))
        want = tuple(r.stop - r.start for r in region)
        if out.shape != want:
            msg = (
                f"map_tiles: func returned shape {out.shape} for tile {tile.name!r} region "
                f"of shape {want}; it must return one value per voxel (z, y, x)"
            )
            raise ParameterError(msg)
        return out

    def __call__(self, i: int) -> str:
        tile = self.tiles[i]
        name = f"tile_{i:05d}"
        shape = tile.shape
        # a whole tile is one block; blocks smaller than the tile are joined afterwards
        block = tuple(min(b, n) for b, n in zip(self.block or shape, shape, strict=True))
        merge = self.merge_blocks and block != shape
        target = name + "_blocks" if merge else name
        arr = None
        for start in itertools.product(
            *[range(0, n, b) for n, b in zip(shape, block, strict=True)]
        ):
            core = [slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True)]
            grown = [
                slice(max(c.start - self.halo, 0), min(c.stop + self.halo, n))
                for c, n in zip(core, shape, strict=True)
            ]
            res = self._apply(tile, tuple(grown))
            if arr is None:  # created at the first result, which tells the dtype
                arr = self.group.create_array(
                    target,
                    shape=shape,
                    dtype=self.dtype or res.dtype,
                    chunks=block,
                    fill_value=0,
                    overwrite=True,
                )
            trim = tuple(
                slice(c.start - g.start, c.stop - g.start) for c, g in zip(core, grown, strict=True)
            )
            arr[tuple(core)] = res[trim].astype(arr.dtype, copy=False)
        if merge:
            from tilefuse.merge import merge_tile_labels

            merge_tile_labels(
                arr, self.group, output_component=name, sequential_labels=True, n_workers=1
            )
            del self.group[target]
        return name


def map_tiles(
    tiles: Sequence[Tile],
    func: Callable[[NDArray[Any]], NDArray[Any]],
    *,
    store: str | os.PathLike[str] | None = None,
    dtype: Any = None,
    block: tuple[int, int, int] | None = None,
    halo: int = 0,
    merge_blocks: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> list[Tile]:
    """Apply ``func`` to every tile and return the results as tiles.

    Parameters
    ----------
    tiles : sequence of Tile
        Input tiles.
    func : callable
        Takes a tile's pixels as `Tile.read` returns them (``(z, y, x)``, or
        ``(c, z, y, x)`` for several channels) and returns one value per voxel,
        shape ``(z, y, x)`` (e.g. a label image).
    store : path, optional
        A zarr group to stage the results in (``tile_00000``...); default a
        new temporary folder. An existing group is refused.
    dtype : dtype-like, optional
        Output dtype (default: what ``func`` returns; int32 for blocks).
    block : tuple of 3 ints, optional
        Process each tile block by block (bounded memory) instead of whole.
    halo : int
        With ``block``: voxels of context added on every side of a block
        before ``func`` and trimmed after.
    merge_blocks : bool
        With ``block``: treat results as labels and join them across block
        faces with `merge_tile_labels` (IDs 1..n per tile), as a whole-tile
        segmentation would number them.
    workers : int, optional
        Threads (one tile per task).
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Tile
        Same tiles, names and placements; pixels read lazily from the store.
    """
    tiles = list(tiles)
    root = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="tilefuse-map-"))
    if store is not None and root.exists() and any(root.iterdir()):
        msg = f"map_tiles store exists and is not empty: {root}"
        raise OutputExistsError(msg)
    group = zarr.open_group(str(root), mode="a")
    task = _TileTask(tiles, func, group, dtype, block, halo, merge_blocks)
    names: dict[int, str] = {}
    for i, name in imap_unordered(
        task,
        list(range(len(tiles))),
        workers=workers,
        progress=progress,
        desc="map tiles",
        unit="tile",
    ):
        names[i] = name
    out = [
        dataclasses.replace(
            t,
            source=ArraySource(zarr.open_array(str(root / names[i]), mode="r")),
            channels=(),
            metadata={**t.metadata, "store": str(root), "array": names[i]},
        )
        for i, t in enumerate(tiles)
    ]
    logger.info("mapped %d tiles into %s", len(out), root)
    return out
