"""merge_tile_labels against whole-volume scipy.ndimage.label."""

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage

from tests_helpers import same_partition
from tilefuse import LabelError
from tilefuse.merge import merge_tile_labels


def binary_volume(shape, seed=0, threshold=0.55):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), 2) > threshold


def per_chunk_labels(binary, chunks):
    out = np.zeros(binary.shape, np.int32)
    for idx in np.ndindex(*[-(-s // c) for s, c in zip(binary.shape, chunks, strict=True)]):
        sl = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks, strict=True))
        out[sl] = ndimage.label(binary[sl])[0]
    return out


@pytest.mark.parametrize("threshold", [0.55, 0.5], ids=["sparse", "dense"])
@pytest.mark.parametrize("shape", [(20, 70, 90), (1, 130, 150)])
def test_equals_whole_volume_label_from_zarr(tmp_path, shape, threshold):
    binary = binary_volume(shape, threshold=threshold)
    chunks = (8, 32, 32) if shape[0] > 1 else (1, 32, 32)
    local = per_chunk_labels(binary, chunks)
    g = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    g.create_array("labels", data=local, chunks=chunks)
    before = (tmp_path / "in.zarr" / "labels" / "zarr.json").read_bytes()
    truth, n = ndimage.label(binary)
    out = merge_tile_labels(tmp_path / "in.zarr", tmp_path / "out.zarr", sequential_labels=True)
    merged = out[...]
    assert same_partition(merged, truth)
    assert merged.max() == n and len(np.unique(merged)) == n + 1
    # the input is untouched
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "in.zarr"))["labels"][...], local)
    assert (tmp_path / "in.zarr" / "labels" / "zarr.json").read_bytes() == before
    # non-sequential: each object keeps its smallest offset id
    gappy = merge_tile_labels(g["labels"], n_workers=1)
    assert same_partition(gappy, truth)


def test_from_dask_with_halos():
    binary = binary_volume((24, 80, 96), seed=1)
    truth, _ = ndimage.label(binary)
    darr = da.from_array(binary, chunks=(12, 40, 48))
    halo = 3
    # each block labelled with a halo of 3 voxels (kept in the block), as patchworks expects
    labeled = da.overlap.overlap(darr, depth=halo, boundary="none").map_blocks(
        lambda b: ndimage.label(b)[0].astype(np.int32), dtype=np.int32
    )
    assert labeled.chunks[1] == (43, 43)
    merged = merge_tile_labels(labeled, overlap=halo, sequential_labels=True)
    assert merged.shape == binary.shape
    assert same_partition(merged, truth)
    # without halos too
    plain = darr.map_blocks(lambda b: ndimage.label(b)[0].astype(np.int32), dtype=np.int32)
    assert same_partition(merge_tile_labels(plain), truth)


def test_min_contact_keeps_touching_cells_apart():
    vol = np.zeros((1, 20, 40), np.int32)
    vol[0, 5:15, 5:20] = 1  # left cell, chunk 0
    vol[0, 5:15, 20:35] = 1  # right cell, chunk 1: touches over 10 voxels
    vol[0, 2:3, 10:30] = 2  # a thin process crossing the face with 1 voxel of contact
    local = per_chunk_labels(vol > 0, (1, 20, 20))
    # plain connected components: the joined cells and the process, 2 objects
    plain = merge_tile_labels(local_as_zarr(local, (1, 20, 20)), sequential_labels=True)
    assert plain.max() == 2
    out = merge_tile_labels(
        local_as_zarr(local, (1, 20, 20)), min_contact=5, sequential_labels=True
    )
    # the big cells (10 voxels of contact) join; the thin process (1 voxel) stays split
    assert out.max() == 3


def local_as_zarr(data, chunks):
    z = zarr.create_array(
        zarr.storage.MemoryStore(), shape=data.shape, chunks=chunks, dtype=data.dtype
    )
    z[...] = data
    return z


def test_bad_input():
    with pytest.raises(LabelError, match="integer dtype"):
        merge_tile_labels(local_as_zarr(np.zeros((4, 4, 4), np.float32), (2, 2, 2)))
    neg = np.zeros((4, 4, 4), np.int32)
    neg[0, 0, 0] = -1
    with pytest.raises(LabelError, match="negative label"):
        merge_tile_labels(local_as_zarr(neg, (2, 2, 2)))


def test_sparse_budget_exceeded_rereads(monkeypatch):
    import tilefuse.merge as merge_mod

    monkeypatch.setattr(merge_mod, "_SPARSE_BUDGET", 2000)  # only a few chunks stay in memory
    binary = binary_volume((16, 64, 64), seed=3)
    local = per_chunk_labels(binary, (8, 16, 16))
    truth, _ = ndimage.label(binary)
    assert same_partition(merge_tile_labels(local_as_zarr(local, (8, 16, 16))), truth)


def test_huge_local_ids_cost_what_is_present():
    """Chunk-local IDs near 3e9 (uint64): the same partition, and tables sized by the labels
    present (a dense table up to 3e9 would need 24 GB per chunk)."""
    import tracemalloc

    binary = binary_volume((16, 64, 64), seed=3)
    chunks = (8, 32, 32)
    local = per_chunk_labels(binary, chunks).astype(np.uint64)
    local[local > 0] += np.uint64(3_000_000_000)
    truth, n = ndimage.label(binary)
    tracemalloc.start()
    try:
        merged = merge_tile_labels(zarr.array(local, chunks=chunks), sequential_labels=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert same_partition(merged, truth) and merged.max() == n
    assert peak < 64 * 2**20, peak / 2**20
    gappy = merge_tile_labels(zarr.array(local, chunks=chunks), n_workers=1)
    assert same_partition(gappy, truth) and gappy.min() == 0
