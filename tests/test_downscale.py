"""Downscale on read: equals block_reduce / striding of the full tile, while reading less."""

import numpy as np
from skimage import measure as skimage_measure

from conftest import CountingSource
from tilefuse import Tile, Tileset
from tilefuse.geometry import affine_from_offset
from tilefuse.synthetic import cut_tiles, make_volume


def test_mean_equals_block_reduce_and_stride_reads_fewer_planes():
    a, _ = make_volume((9, 50, 61), seed=1)
    src = CountingSource(a)
    t = Tile(src, affine_from_offset((1.0, 0.5, 0.5), (2.0, 3.0, 4.0)))
    mean = t.downscale((2, 3, 3))
    want = skimage_measure.block_reduce(a.astype(float), (2, 3, 3), np.mean)
    assert mean.shape == (5, 17, 21)
    # block_reduce pads partial edge windows with zeros; compare the complete windows
    np.testing.assert_array_equal(mean.read()[:4, :16, :20], np.floor(want[:4, :16, :20] + 0.5))
    np.testing.assert_allclose(mean.voxel_size, [2.0, 1.5, 1.5])
    # a mean of f voxels sits at the mean of their centres: (f - 1) / 2 old voxels on
    np.testing.assert_allclose(mean.offset, t.offset + np.array([0.5, 1.0, 1.0]) * [1, 0.5, 0.5])
    src.regions.clear()
    stride = t.downscale((3, 2, 2), method="stride")
    np.testing.assert_array_equal(stride.read(), a[::3, ::2, ::2])
    np.testing.assert_allclose(stride.offset, t.offset)  # keeps voxel 0 and its centre
    planes_read = sum(r[0].stop - r[0].start for r in src.regions)
    assert planes_read == 3 < a.shape[0]  # only the kept planes were read
    # a region of the downscaled tile reads only its part of the source
    src.regions.clear()
    np.testing.assert_array_equal(mean.read(((1, 2), (2, 4), (0, 3))), mean.read()[1:2, 2:4, 0:3])
    assert min(src.voxels_read()) <= 2 * 6 * 9


def test_downscaled_tileset_fuses_to_the_downscaled_volume():
    vol, _ = make_volume((8, 120, 160), seed=2)
    m = cut_tiles(vol, (2, 2), tile_shape=(64, 84))
    assert np.all(m.offsets_px % 4 == 0)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px * [1, 0.25, 0.25], voxel_size=(1, 0.25, 0.25))
    small = ts.downscale((1, 4, 4), method="stride")
    np.testing.assert_allclose(small.voxel_size, [1, 1, 1])
    np.testing.assert_allclose(small.offsets, ts.offsets)
    np.testing.assert_array_equal(small.fuse(blend="overwrite"), vol[:, ::4, ::4])
