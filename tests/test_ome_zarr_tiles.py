"""OME-Zarr images as tiles: positions from coordinateTransformations, any level."""

import numpy as np
import pytest
import zarr

from tilefuse import MultiScaleGroup, Tileset
from tilefuse.errors import UnsupportedFormatError
from tilefuse.io.tiff import write_tiff
from tilefuse.pyramid import downsample
from tilefuse.synthetic import cut_tiles, make_volume

VS = np.array([0.5, 0.2, 0.2])


def write_tiles_as_ome_zarr(folder, mosaic, version="0.5"):
    paths = []
    for i, (t, o) in enumerate(zip(mosaic.tiles, mosaic.offsets_px, strict=True)):
        g = MultiScaleGroup.create(
            folder / f"tile_{i}.ome.zarr",
            shape=t.shape,
            dtype=t.dtype,
            voxel_size=VS,
            origin=o * VS,
            chunks=(8, 32, 32),
            version=version,
        )
        g.write_array(t)
        g.build_pyramid(2, factors=(1, 2, 2))
        g.mark_complete()
        paths.append(g.path)
    return paths


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_folder_of_images_fuses_like_tiff(tmp_path, version):
    vol, _ = make_volume((8, 128, 160), seed=9)
    m = cut_tiles(vol, (2, 2), tile_shape=(72, 88))
    m_offsets_even = m.offsets_px
    write_tiles_as_ome_zarr(tmp_path, m, version)
    ts = Tileset.from_ome_zarr(tmp_path)
    assert [t.name for t in ts] == [f"tile_{i}.ome.zarr" for i in range(4)]
    np.testing.assert_allclose(ts.offsets, m_offsets_even * VS)
    tiffs = [write_tiff(tmp_path / f"t{i}.tif", t) for i, t in enumerate(m.tiles)]
    from_tiff = Tileset.from_tiff(tiffs, m.offsets_px * VS, voxel_size=VS)
    np.testing.assert_array_equal(ts.fuse(), from_tiff.fuse())
    np.testing.assert_array_equal(ts.fuse(), vol)


def test_level_one_and_store_with_several_images(tmp_path):
    vol, _ = make_volume((4, 128, 128), seed=10)
    m = cut_tiles(vol, (2, 2), tile_shape=(80, 80))
    assert np.all(m.offsets_px % 2 == 0)  # even offsets: level-1 voxels align
    root = zarr.open_group(str(tmp_path / "all.zarr"), mode="w")
    del root
    for i, (t, o) in enumerate(zip(m.tiles, m.offsets_px, strict=True)):
        g = MultiScaleGroup.create(
            tmp_path / "all.zarr" / f"tile{i}",
            shape=t.shape,
            dtype=t.dtype,
            voxel_size=VS,
            origin=o * VS,
            chunks=(4, 32, 32),
        )
        g.write_array(t)
        g.build_pyramid(2, factors=(1, 2, 2))
        g.mark_complete()
    ts1 = Tileset.from_ome_zarr(tmp_path / "all.zarr", level=1)
    assert len(ts1) == 4
    np.testing.assert_allclose(ts1.voxel_size, VS * [1, 2, 2])
    # level 1 (2 x 2 mean in y, x): voxel 0 is centred half a level-0 voxel further on
    np.testing.assert_allclose(ts1.offsets, m.offsets_px * VS + np.array([0, 0.5, 0.5]) * VS)
    fused1 = ts1.fuse(blend="overwrite")
    np.testing.assert_array_equal(fused1, downsample(vol, (1, 2, 2)))


def test_not_ome_zarr(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array(
        "x", shape=(2, 2), dtype="u1"
    )
    with pytest.raises(UnsupportedFormatError, match="no OME-Zarr multiscale image"):
        Tileset.from_ome_zarr(tmp_path / "plain.zarr")
