"""Label deduplication against ground truth: tiles cut from a known label volume."""

import numpy as np
import pytest
import zarr

from tests_helpers import same_partition
from tilefuse import LabelError, Tileset
from tilefuse.labels import LabelMapping
from tilefuse.synthetic import cut_tiles, make_volume


def renumber_randomly(tiles, seed=0, start=1):
    """Number every tile's objects independently, in random order (like per-tile segmentation)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in tiles:
        ids = np.unique(t[t > 0])
        lut = np.zeros(int(t.max()) + 1, dtype=np.uint32)
        lut[ids] = rng.permutation(len(ids)).astype(np.uint32) + start
        out.append(lut[t])
    return out


def label_mosaic(truth, grid, overlap=0.25, tile_shape=None, seed=0):
    m = cut_tiles(truth, grid, overlap=overlap, tile_shape=tile_shape)
    return Tileset.from_arrays(renumber_randomly(m.tiles, seed), m.offsets_px)


@pytest.mark.parametrize("zdim", [1, 12])
def test_blobs_mosaic_recovers_truth(zdim):
    _, truth = make_volume((zdim, 180, 200), seed=3, blob_radius=6, n_blobs=60)
    ts = label_mosaic(truth, (3, 3))
    mapping = ts.dedup_labels()
    assert mapping.n_objects == len(np.unique(truth[truth > 0]))
    fused = ts.fuse_labels(mapping=mapping)
    assert fused.dtype == np.uint32
    assert same_partition(fused, truth)
    assert set(np.unique(fused)) == set(range(mapping.n_objects + 1))  # contiguous from 1


def test_chain_through_three_tiles_and_four_tile_corner():
    truth = np.zeros((4, 60, 150), np.uint32)
    truth[:, 28:32, 5:145] = 1  # a rod through all three tiles of a row
    truth[:, 2:5, 2:5] = 2
    ts = label_mosaic(truth, (1, 3), overlap=0.2)
    mapping = ts.dedup_labels()
    assert mapping.n_objects == 2
    assert same_partition(ts.fuse_labels(mapping=mapping), truth)
    # corner: a blob where four tiles overlap, and a rod through a column of a 3x2 grid
    truth = np.zeros((4, 150, 100), np.uint32)
    truth[:, 45:55, 45:55] = 1
    truth[:, 5:145, 10:13] = 2
    m = cut_tiles(truth, (3, 2), overlap=0.3)
    ts = Tileset.from_arrays(renumber_randomly(m.tiles, 1), m.offsets_px)
    # the blob is seen by four tiles (a corner), the rod by all three rows
    originals = m.tiles
    assert sum(bool((t == 1).any()) for t in originals) == 4
    assert sum(bool((t == 2).any()) for t in originals) == 3
    mapping = ts.dedup_labels()
    assert mapping.n_objects == 2
    assert same_partition(ts.fuse_labels(mapping=mapping), truth)


def test_nonsquare_tiles_and_uneven_grid():
    _, truth = make_volume((6, 130, 260), seed=4, blob_radius=5, n_blobs=50)
    ts = label_mosaic(truth, (2, 4), tile_shape=(80, 90))
    mapping = ts.dedup_labels()
    assert mapping.n_objects == len(np.unique(truth[truth > 0]))
    assert same_partition(ts.fuse_labels(mapping=mapping, rule="overwrite"), truth)


def test_more_than_65535_labels_in_one_tile():
    truth = np.zeros((6, 280, 600), np.uint32)
    pts = np.zeros_like(truth, dtype=bool)
    pts[::2, ::2, ::2] = True  # isolated single voxels, 6-connected components of one voxel
    truth[pts] = np.arange(1, pts.sum() + 1, dtype=np.uint32)
    m = cut_tiles(truth, (1, 2), overlap=0.1, tile_shape=(280, 320))
    tiles = renumber_randomly(m.tiles, 2, start=70000)  # and ids above 65535
    assert min(len(np.unique(t)) - 1 for t in tiles) > 65535  # 3 * 140 * 160 = 67200 per tile
    ts = Tileset.from_arrays(tiles, m.offsets_px)
    mapping = ts.dedup_labels()
    assert mapping.n_objects == pts.sum()
    assert same_partition(ts.fuse_labels(mapping=mapping), truth)


def test_touching_distinct_objects_stay_distinct():
    truth = np.zeros((4, 40, 80), np.uint32)
    truth[:, 10:30, 20:40] = 1
    truth[:, 10:30, 40:60] = 2  # touches object 1 along x = 40, inside the overlap
    m = cut_tiles(truth, (1, 2), overlap=0.6, tile_shape=(40, 50))
    left, right = (t.copy() for t in m.tiles)
    # tile 2's segmentation disagrees at the border: object 2 leaks 2 voxels into object 1
    ox = int(m.offsets_px[1, 2])
    right[:, 10:30, 38 - ox : 40 - ox] = 2
    ts = Tileset.from_arrays([left, right], m.offsets_px)
    assert ts.dedup_labels().n_objects == 2
    assert ts.dedup_labels(mutual_best=True).n_objects == 2
    # with the rules switched off, the leak merges them: the rules are what keeps them apart
    assert ts.dedup_labels(min_overlap_fraction=0, mutual_best=False).n_objects == 1


def test_bad_label_input():
    a = np.zeros((2, 10, 10), np.float32)
    with pytest.raises(LabelError, match="integer dtype"):
        Tileset.from_arrays([a, a], [(0, 0, 0), (0, 0, 5)]).dedup_labels()
    b = np.zeros((2, 10, 10), np.int32)
    b[0, 0, 0] = -3
    with pytest.raises(LabelError, match="negative label -3"):
        Tileset.from_arrays([b, b], [(0, 0, 0), (0, 0, 5)]).dedup_labels()
    c = np.ones((2, 10, 10), np.uint16)
    ts = Tileset.from_arrays([c, c], [(0, 0, 0), (0, 0, 5)])
    mapping = ts.dedup_labels()
    other = Tileset.from_arrays([c, c, c], [(0, 0, 0), (0, 0, 5), (0, 0, 9)])
    with pytest.raises(LabelError, match="computed on 2 tiles"):
        mapping.apply(other)
    with pytest.raises(ValueError, match="labels must be fused with"):
        ts.fuse_labels(rule="linear")


def test_mapping_save_load_and_lazy_apply(tmp_path):
    _, truth = make_volume((4, 90, 100), seed=5, blob_radius=4, n_blobs=20)
    ts = label_mosaic(truth, (2, 2))
    mapping = ts.dedup_labels()
    path = mapping.save(tmp_path / "mapping.npz")
    back = LabelMapping.load(path)
    assert back.n_objects == mapping.n_objects
    assert back.luts == mapping.luts
    assert back.merges.shape[1] == 5 and len(back.merges) > 0
    mapped = back.apply(ts)
    t0 = mapped[0].read()
    np.testing.assert_array_equal(t0, mapping.luts[0][ts[0].read()])
    relabelled = ts.relabel(back)
    assert isinstance(relabelled, Tileset)
    np.testing.assert_array_equal(relabelled.offsets, ts.offsets)
    for k in range(len(ts)):
        np.testing.assert_array_equal(relabelled[k].read(), mapping.luts[k][ts[k].read()])


def test_fused_labels_into_image_store(tmp_path):
    img, truth = make_volume((8, 120, 130), seed=6, blob_radius=4, n_blobs=40)
    m = cut_tiles(img, (2, 2), overlap=0.25)
    vs = (0.4, 0.2, 0.2)
    images = Tileset.from_arrays(m.tiles, m.offsets_px * vs, voxel_size=vs)
    group = images.fuse(tmp_path / "s.ome.zarr", levels=3)
    labels = label_mosaic(truth, (2, 2), overlap=0.25)
    labels = Tileset.from_arrays([t.read() for t in labels], m.offsets_px * vs, voxel_size=vs)
    mapping = labels.dedup_labels()
    lab = labels.fuse_labels(tmp_path / "s.ome.zarr", mapping=mapping, name="cells")
    assert group.labels == ["cells"]
    assert lab.n_levels == group.n_levels == 3 and lab.kind == "label"
    assert same_partition(lab.read(), truth)
    import ome_zarr_models

    ome_zarr_models.open_ome_zarr(zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="r"))
    ome_zarr_models.open_ome_zarr(
        zarr.open_group(str(tmp_path / "s.ome.zarr" / "labels"), mode="r")
    )
    # no new ids appear in the mode pyramid
    assert set(np.unique(lab.read(level=2))) <= set(np.unique(lab.read()))
    # a standalone label store
    solo = labels.fuse_labels(tmp_path / "solo.ome.zarr", mapping=mapping, levels=2)
    assert solo.kind == "label" and solo.n_levels == 2
    assert same_partition(solo.read(), truth)


def test_local_to_global():
    ts = Tileset.from_arrays(
        [np.zeros((2, 5, 5)), np.zeros((2, 5, 5))],
        [(0, 0, 0), (1.0, 2.0, 3.5)],
        voxel_size=(2, 0.5, 0.5),
    )
    got = ts.local_to_global([[0, 1, 2, 3], [1, 0.5, 0, 4]])
    np.testing.assert_allclose(got, [[2, 1, 1.5], [2.0, 2.0, 5.5]])
    with pytest.raises(ValueError, match="tile indices"):
        ts.local_to_global([[2, 0, 0, 0]])


def segment(img):
    from scipy import ndimage

    return ndimage.label(img > 30000)[0].astype(np.uint32)


@pytest.mark.parametrize("block", [None, (4, 40, 40)])
def test_segment_then_stitch_equals_whole_volume_segmentation(tmp_path, block):
    img, _ = make_volume((10, 150, 170), seed=7, blob_radius=4, n_blobs=50)
    truth = segment(img)
    m = cut_tiles(img, (2, 3), overlap=0.3)
    tiles = Tileset.from_arrays(m.tiles, m.offsets_px)
    labels = tiles.map_tiles(
        segment, store=tmp_path / "seg.zarr", block=block, halo=2, dtype=np.uint32, workers=2
    )
    assert [t.name for t in labels] == [t.name for t in tiles]
    np.testing.assert_allclose(labels.offsets, tiles.offsets)
    if block is None:
        np.testing.assert_array_equal(labels[4].read(), segment(m.tiles[4]))
    else:  # blocks with halos, merged across block faces: the same partition as whole tiles
        assert same_partition(labels[4].read(), segment(m.tiles[4]))
    mapping = labels.dedup_labels()
    assert mapping.n_objects == truth.max()
    assert same_partition(labels.fuse_labels(mapping=mapping), truth)
    with pytest.raises(Exception, match="not empty"):
        tiles.map_tiles(segment, store=tmp_path / "seg.zarr")


def test_object_table_matches_scipy(tmp_path):
    from scipy import ndimage

    from tilefuse.objects import object_table

    _, truth = make_volume((12, 90, 110), seed=8, blob_radius=5, n_blobs=30)
    vs, org = np.array([0.5, 0.2, 0.25]), np.array([3.0, -1.0, 2.0])
    table = object_table(truth, voxel_size=vs, origin=org, block=(5, 40, 40), workers=2)
    ids = np.unique(truth[truth > 0])
    np.testing.assert_array_equal(table.label, ids)
    np.testing.assert_array_equal(table.voxels, ndimage.sum_labels(np.ones_like(truth), truth, ids))
    com = np.array(ndimage.center_of_mass(np.ones_like(truth), truth, ids))
    np.testing.assert_allclose(table.centroid, org + com * vs)
    boxes = ndimage.find_objects(truth)
    lo = np.array([[s.start for s in boxes[i - 1]] for i in ids])
    hi = np.array([[s.stop for s in boxes[i - 1]] for i in ids])
    # the box of the voxels' extents: half a voxel beyond the first and last centres
    np.testing.assert_allclose(table.bbox_lo, org + (lo - 0.5) * vs)
    np.testing.assert_allclose(table.bbox_hi, org + (hi - 0.5) * vs)
    path = table.to_csv(tmp_path / "objects.csv")
    rows = path.read_text().splitlines()
    assert rows[0].startswith("label,voxels,centroid_z_um") and len(rows) == len(ids) + 1


# -- sparse lookup tables ------------------------------------------------------------------------
def test_label_table_dense_and_sparse_paths_agree():
    from tilefuse.labels import LabelTable

    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(1, 5000, 300))
    values = rng.permutation(len(keys)) + 1
    small = LabelTable(keys, values, np.uint32)
    huge = LabelTable(keys + 3_000_000_000, values, np.uint32)  # forces the binary search
    labels = rng.choice(np.r_[0, keys], size=(4, 20, 20))
    expect = np.zeros(labels.shape, np.uint32)
    for k, v in zip(keys, values, strict=True):
        expect[labels == k] = v
    np.testing.assert_array_equal(small[labels], expect)
    np.testing.assert_array_equal(huge[np.where(labels > 0, labels + 3_000_000_000, 0)], expect)
    assert small._dense is not None and huge._dense is None
    with pytest.raises(LabelError, match="label 4 is not in the mapping"):
        LabelTable(np.array([1, 2, 3]), np.array([7, 8, 9]), np.uint32)[np.array([0, 4])]
    # old dense tables load as the same sparse table
    dense = np.zeros(10, np.uint32)
    dense[[3, 7]] = [1, 2]
    assert LabelTable.from_dense(dense) == LabelTable(np.array([3, 7]), np.array([1, 2]), np.uint32)


def test_huge_label_ids_cost_what_is_present(tmp_path):
    import pickle

    from tilefuse.labels import MappedSource

    _, truth = make_volume((4, 90, 100), seed=5, blob_radius=4, n_blobs=20)
    ts = label_mosaic(truth, (2, 2))
    small = ts.dedup_labels()
    # the same tiles with every nonzero label shifted to IDs near 3e9
    big_tiles = [np.where(t.read() > 0, t.read().astype(np.uint64) + 3_000_000_000, 0) for t in ts]
    assert big_tiles[0].shape == ts[0].shape
    big = Tileset.from_arrays(big_tiles, ts.offsets, voxel_size=ts.voxel_size)
    mapping = big.dedup_labels()
    assert mapping.n_objects == small.n_objects
    for a, b in zip(mapping.luts, small.luts, strict=True):
        assert len(a) == len(b) and a.max_label >= 3_000_000_000
        np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(big.fuse_labels(mapping=mapping), ts.fuse_labels(mapping=small))
    # what ships to a worker is the labels present, not a table up to 3e9
    shipped = pickle.dumps(MappedSource(big[0].source, mapping.luts[0], mapping.dtype))
    assert len(shipped) < 10 * 1024 + big_tiles[0].nbytes
    back = LabelMapping.load(mapping.save(tmp_path / "m.npz"))
    assert back.luts == mapping.luts
