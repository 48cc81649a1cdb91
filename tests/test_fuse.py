import numpy as np
import pytest
from scipy import ndimage

from conftest import CountingSource, smooth_volume
from tilefuse import Tile, Tileset
from tilefuse.errors import EmptyTilesetError, OutputExistsError, StoreError
from tilefuse.geometry import affine_from_offset
from tilefuse.synthetic import cut_tiles, make_volume


def mosaic_tileset(vol, grid=(3, 3), overlap=0.2, vs=(1.0, 1.0, 1.0), tile_shape=None):
    m = cut_tiles(vol, grid, overlap=overlap, tile_shape=tile_shape)
    return m, Tileset.from_arrays(m.tiles, m.offsets_px * np.asarray(vs), voxel_size=vs)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32])
@pytest.mark.parametrize("blend", ["overwrite", "linear", "mean", "max"])
def test_integer_offsets_reproduce_the_volume(dtype, blend):
    vol, _ = make_volume((12, 130, 150), seed=5, dtype=dtype)
    _, ts = mosaic_tileset(vol, vs=(0.5, 0.2, 0.2))
    fused = ts.fuse(blend=blend, chunks=(8, 64, 64))  # blocks smaller than tiles
    assert fused.dtype == vol.dtype
    np.testing.assert_array_equal(fused, vol)


@pytest.mark.parametrize("grid", [(1, 4), (4, 1), (2, 3)])
def test_2d_and_nonsquare_tiles(grid):
    vol, _ = make_volume((1, 90, 210), seed=6)
    _, ts = mosaic_tileset(vol, grid=grid, tile_shape=(50, 70) if grid == (2, 3) else None)
    assert ts.is_2d
    fused = ts.fuse(blend="overwrite")
    assert fused.shape == vol.shape
    np.testing.assert_array_equal(fused, vol)


def test_multichannel():
    vol, _ = make_volume((6, 80, 90), seed=7)
    two = np.stack([vol, vol // 2 + 3])
    m = cut_tiles(two, (2, 2), overlap=0.25)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px, channels=("a", "b"))
    fused = ts.fuse(blend="linear")
    assert fused.shape == two.shape
    np.testing.assert_array_equal(fused, two)


def offset_tiles():
    """Two overlapping tiles of constant, different values, and a third on top."""
    a = np.full((4, 20, 30), 100, np.uint16)
    b = np.full((4, 20, 30), 300, np.uint16)
    c = np.full((4, 10, 10), 1000, np.uint16)
    return Tileset.from_arrays([a, b, c], [(0, 0, 0), (0, 0, 20), (0, 5, 15)])


def test_overwrite_last_and_first_wins():
    ts = offset_tiles()
    last = ts.fuse(blend="overwrite")
    first = ts.fuse(blend="overwrite", priority="first")
    assert last.shape == (4, 20, 50)
    # last wins: c over b over a
    assert last[0, 0, 19] == 100 and last[0, 0, 20] == 300 and last[0, 6, 16] == 1000
    assert last[0, 0, 25] == 300
    # first wins: a keeps its whole footprint, b keeps x >= 30 where c does not cover
    assert first[0, 0, 25] == 100 and first[0, 6, 16] == 100 and first[0, 6, 31] == 300
    assert first[0, 6, 26] == 100


def test_max_and_mean_voxelwise():
    ts = offset_tiles()
    cover = np.zeros((4, 20, 50))
    total = np.zeros((4, 20, 50))
    mx = np.zeros((4, 20, 50))
    for t in ts:
        sl = tuple(slice(int(o), int(o) + s) for o, s in zip(t.offset, t.shape, strict=True))
        cover[sl] += 1
        total[sl] += t.read()
        mx[sl] = np.maximum(mx[sl], t.read())
    np.testing.assert_array_equal(ts.fuse(blend="max"), mx.astype(np.uint16))
    want = np.rint(np.divide(total, cover, where=cover > 0, out=np.zeros_like(total)))
    np.testing.assert_array_equal(ts.fuse(blend="mean"), want.astype(np.uint16))


def test_uncovered_voxels_are_zero():
    a = np.ones((2, 5, 5), np.float32)
    ts = Tileset.from_arrays([a, a], [(0, 0, 0), (0, 10, 10)])
    f = ts.fuse(blend="linear")
    assert f.shape == (2, 15, 15)
    assert f[:, 6:9, :].sum() == 0 and f[:, :5, :5].min() == 1


def test_linear_leaves_no_seam():
    """Tiles of a smooth volume with different brightness: overwrite steps, linear does not."""
    vol = smooth_volume((4, 120, 200), seed=1) * 100
    m = cut_tiles(vol, (1, 3), overlap=0.3)
    tiles = [t + 20.0 * k for k, t in enumerate(m.tiles)]  # per-tile gain offset
    ts = Tileset.from_arrays(tiles, m.offsets_px)
    smooth_step = np.abs(np.diff(vol, axis=2)).max()
    hard = ts.fuse(blend="overwrite")
    soft = ts.fuse(blend="linear", blend_width=(1, 1, 40))
    assert np.abs(np.diff(hard, axis=2)).max() > 20 - smooth_step
    # linear ramp over 40 voxels spreads a 20 step to at most 20/40 per voxel (x2 margin)
    assert np.abs(np.diff(soft, axis=2)).max() < smooth_step + 2 * 20 / 40
    # and where only one tile covers, the value is that tile's
    np.testing.assert_allclose(soft[:, :, :30], tiles[0][:, :, :30], rtol=1e-6)


def test_fractional_offsets_within_interpolation_error():
    shape = (6, 60, 180)
    vol = smooth_volume(shape, seed=2)
    coords = np.indices(shape).astype(float)
    offs = np.array([[0, 0, 0], [0.0, 0.5, 55.25], [0.0, 0.75, 110.6]])
    tiles = []
    for o in offs:
        c = coords[:, :, :50, :70] + o.reshape(3, 1, 1, 1)  # tile voxel i sits at world o + i
        tiles.append(ndimage.map_coordinates(vol.astype(float), c, order=3).astype(np.float32))
    ts = Tileset.from_arrays(tiles, offs)
    fused = ts.fuse(blend="linear")
    # compare where every covering tile is interpolable: the output grid starts at 0
    truth = vol[:, : fused.shape[1], : fused.shape[2]]
    inner = np.s_[:, 2:48, 2:178]
    err = np.abs(fused[inner] - truth[inner]).max()
    assert err < 2e-3, err
    # the first tile is at an integer offset: exact where it alone covers
    np.testing.assert_allclose(fused[:, :50, :55], tiles[0][:, :, :55], atol=1e-6)


def test_rotated_tile_general_affine_path():
    rng = np.random.default_rng(8)
    a = rng.integers(0, 1000, (3, 12, 17)).astype(np.uint16)
    aff = np.eye(4)
    aff[1:3, 1:3] = [[0, -1], [1, 0]]  # world y = 16 - x_idx, world x = y_idx (voxel centres)
    aff[1, 3] = 16.0
    t = Tile.from_array(a)
    t = t.with_affine(aff)
    assert not t.is_translation
    ts = Tileset([t])
    fused = ts.fuse(blend="overwrite")
    # box: y in (16 - 16.5, 16 + 0.5] -> 17 rows centred at 0..16; x in [-0.5, 11.5) -> 12
    assert fused.shape == (3, 17, 12)
    # output voxel (j, c) is centred at world (j, c) <-> tile voxel (yi, xi) = (c, 16 - j):
    # every row and column of the tile is there, none lost at the box edges
    rot = np.rot90(a, k=1, axes=(1, 2))  # rot[:, r, c] = a[:, c, 16 - r]
    np.testing.assert_array_equal(fused, rot)


def test_other_output_voxel_size_resamples():
    vol = smooth_volume((4, 64, 64), seed=3)
    ts = Tileset.from_arrays([vol], [(0, 0, 0)], voxel_size=(1, 0.5, 0.5))
    f = ts.fuse(voxel_size=(1, 1.0, 1.0), blend="overwrite")
    assert f.shape == (4, 32, 32)
    # output voxel centres fall midway between two input centres (y, x = 0.25 + k um): the
    # linear resampling there is the mean of the two, i.e. the 2 x 2 block mean
    block_mean = vol.reshape(4, 32, 2, 32, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(f, block_mean, atol=1e-6)


def test_fusion_reads_only_regions():
    vol, _ = make_volume((8, 200, 200), seed=9)
    m = cut_tiles(vol, (2, 2), overlap=0.2)
    sources = [CountingSource(t) for t in m.tiles]
    ts = Tileset(
        [
            Tile(s, affine_from_offset((1, 1, 1), o))
            for s, o in zip(sources, m.offsets_px, strict=True)
        ]
    )
    fused = ts.fuse(blend="linear", chunks=(8, 48, 48), workers=2)
    np.testing.assert_array_equal(fused, vol)
    tile_voxels = int(np.prod(m.tiles[0].shape))
    for s in sources:
        assert s.regions, "every tile is read"
        assert max(s.voxels_read()) <= 8 * 48 * 48 < tile_voxels


def test_threads_and_inline_agree(tmp_path):
    vol, _ = make_volume((10, 120, 140), seed=10)
    _, ts = mosaic_tileset(vol)
    a = ts.fuse(blend="linear", workers=1)
    b = ts.fuse(blend="linear", workers=3, chunks=(5, 40, 40))
    np.testing.assert_array_equal(a, b)
    g = ts.fuse(
        tmp_path / "o.ome.zarr", blend="linear", workers=2, chunks=(5, 32, 32), shards=(10, 64, 64)
    )
    np.testing.assert_array_equal(g.read(), a)


def test_empty_tileset_is_an_error():
    with pytest.raises(EmptyTilesetError):
        Tileset([])
    with pytest.raises(EmptyTilesetError):
        Tileset.from_arrays([], np.zeros((0, 3)))


def test_output_exists_refused(tmp_path):
    vol, _ = make_volume((4, 40, 40), seed=11)
    _, ts = mosaic_tileset(vol, grid=(2, 2))
    out = tmp_path / "o.ome.zarr"
    ts.fuse(out)
    with pytest.raises(OutputExistsError, match="o.ome.zarr"):
        ts.fuse(out)
    g = ts.fuse(out, overwrite=True, blend="max")
    np.testing.assert_array_equal(g.read(), vol)
    # never deletes a folder that is not a zarr store
    plain = tmp_path / "my-data"
    plain.mkdir()
    (plain / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a zarr store"):
        ts.fuse(plain, overwrite=True)
    assert (plain / "precious.txt").read_text() == "keep me"


def test_interrupted_fusion_resumes(tmp_path):
    vol, _ = make_volume((8, 160, 160), seed=12)
    m = cut_tiles(vol, (2, 2), overlap=0.2)

    def tileset(fail_after=None):
        srcs = [CountingSource(t, fail_after=fail_after) for t in m.tiles]
        tiles = [
            Tile(s, affine_from_offset((1, 1, 1), o), name=f"t{i}")
            for i, (s, o) in enumerate(zip(srcs, m.offsets_px, strict=True))
        ]
        return Tileset(tiles), srcs

    out = tmp_path / "o.ome.zarr"
    # each tile's first 2 reads are the pre-flight probe (first and last voxel)
    ts, _ = tileset(fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ts.fuse(out, chunks=(8, 32, 32), shards=(8, 32, 32), workers=1, levels=2)
    from tilefuse import MultiScaleGroup

    g = MultiScaleGroup.open(out)
    assert not g.is_complete
    n_done = len(g.done_blocks())
    assert 0 < n_done < len(g.blocks())
    ts2, srcs2 = tileset()
    g2 = ts2.fuse(out, chunks=(8, 32, 32), shards=(8, 32, 32), workers=1, levels=2)
    assert g2.is_complete and g2.n_levels == 2
    np.testing.assert_array_equal(g2.read(), vol)
    assert not (out / ".tilefuse-progress").exists()
    # the rerun skipped the finished blocks: fewer reads than a full run
    ts3, srcs3 = tileset()
    ts3.fuse(tmp_path / "full.ome.zarr", chunks=(8, 32, 32), shards=(8, 32, 32), workers=1)
    assert sum(len(s.regions) for s in srcs2) < sum(len(s.regions) for s in srcs3)
    # a different plan does not resume into the unfinished store of another
    ts4, _ = tileset(fail_after=3)
    with pytest.raises(RuntimeError):
        ts4.fuse(tmp_path / "x.ome.zarr", chunks=(8, 32, 32), shards=(8, 32, 32), workers=1)
    with pytest.raises(OutputExistsError, match="unfinished"):
        ts2.fuse(tmp_path / "x.ome.zarr", blend="max", chunks=(8, 32, 32), workers=1)


def test_centre_rule_is_a_voronoi_cut_and_both_paths_agree():
    from tilefuse.blend import Part, get_blend
    from tilefuse.fuse import FusionPlan, OutputGrid

    rng = np.random.default_rng(13)
    tiles = [rng.integers(1, 50, (3, 30, 40)).astype(np.uint16) for _ in range(4)]
    ts = Tileset.from_arrays(tiles, [(0, 0, 0), (0, 0, 25), (0, 20, 5), (0, 22, 30)])
    fused = ts.fuse(blend="centre", chunks=(3, 16, 16))
    plan = FusionPlan(ts.tiles, OutputGrid.covering(ts.tiles, ts.voxel_size), blend="centre")
    region = (slice(0, 3), slice(0, fused.shape[1]), slice(0, fused.shape[2]))
    # all-True masks force the general (masked) path of the centre mode
    parts = [
        Part(sub, data, np.ones(data.shape[1:], dtype=bool), None, int(i))
        for i in plan.tiles_in(region)
        for sub, data, _, _ in plan._samples(plan.tiles[i], region)
    ]
    general = get_blend("centre").combine(parts, plan.context(region))[0]
    np.testing.assert_array_equal(fused, general)
    # every voxel comes from the covering tile with the nearest centre
    centres = [t.box[0] + (t.box[1] - t.box[0]) / 2 for t in ts]
    for y, x in [(5, 5), (10, 30), (25, 10), (28, 50), (21, 26)]:
        pos = np.array([1.5, y + 0.5, x + 0.5])
        cover = [k for k, t in enumerate(ts) if np.all(pos >= t.box[0]) and np.all(pos < t.box[1])]
        k = min(cover, key=lambda k: np.sum((pos - centres[k]) ** 2))
        o = ts[k].offset.astype(int)
        assert fused[1, y, x] == tiles[k][1, y - o[1], x - o[2]]


def test_centre_rule_with_a_rotated_tile_invents_no_values():
    a = np.full((2, 20, 20), 7, np.uint32)
    b = np.full((2, 20, 20), 9, np.uint32)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[0, -1], [1, 0]]
    rot[1, 3] = 30.0  # rotated 90 degrees, overlapping tile a
    ts = Tileset([Tile.from_array(a), Tile.from_array(b).with_affine(rot)])
    fused = ts.fuse(blend="centre")
    assert set(np.unique(fused)) <= {0, 7, 9}
    assert (fused == 7).any() and (fused == 9).any()
