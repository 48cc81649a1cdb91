"""Plain HDF5 tiles (one dataset per tile), fused like the same tiles from TIFF."""

import pickle

import h5py
import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.errors import MissingTileError, UnsupportedFormatError
from tilefuse.io.h5 import H5Source, list_datasets
from tilefuse.synthetic import cut_tiles, make_volume


def test_hdf5_masks_fuse_like_arrays(tmp_path):
    _, truth = make_volume((6, 100, 130), seed=5, blob_radius=4, n_blobs=25)
    m = cut_tiles(truth, (2, 3), overlap=0.3)
    path = tmp_path / "masks.h5"
    with h5py.File(path, "w") as f:
        for i, t in enumerate(m.tiles):  # names whose plain sort would be wrong
            f.create_dataset(f"masks/tile_{i * 5}", data=t, chunks=(3, 32, 32))
    names = list_datasets(path)
    assert names == [f"masks/tile_{i * 5}" for i in range(6)]  # natural order: 5 before 10
    ts = Tileset.from_hdf5(path, m.offsets_px)
    assert [t.name for t in ts] == names
    np.testing.assert_array_equal(
        ts[2].read(((1, 4), (10, 20), (5, 9))), m.tiles[2][1:4, 10:20, 5:9]
    )
    arrays = Tileset.from_arrays(m.tiles, m.offsets_px)
    np.testing.assert_array_equal(
        ts.fuse_labels(rule="overwrite"), arrays.fuse_labels(rule="overwrite")
    )
    mapping = ts.dedup_labels()
    assert mapping.n_objects == len(np.unique(truth)) - 1
    src = pickle.loads(pickle.dumps(ts[0].source))
    np.testing.assert_array_equal(
        src.read((slice(0, 6), slice(0, 5), slice(0, 5)))[0], m.tiles[0][:, :5, :5]
    )


def test_hdf5_bad_input(tmp_path):
    with pytest.raises(MissingTileError):
        list_datasets(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UnsupportedFormatError, match="text.h5"):
        list_datasets(tmp_path / "text.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("nothing")
        f.create_dataset("vector", data=np.zeros(5))
    with pytest.raises(UnsupportedFormatError, match="no 2D or 3D dataset"):
        Tileset.from_hdf5(tmp_path / "empty.h5", np.zeros((0, 3)))
    with pytest.raises(UnsupportedFormatError, match="no dataset 'x'"):
        H5Source(tmp_path / "empty.h5", "x")
