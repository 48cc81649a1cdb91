"""Tileset.open detects the input kind by suffix and content; the CLI accepts every kind."""

import shutil

import numpy as np
import pytest

from tilefuse import MultiScaleGroup, Tileset
from tilefuse.cli import main
from tilefuse.errors import UnsupportedFormatError
from tilefuse.io.tiff import write_tiff
from tilefuse.io.tileconfig import write_tileconfig


def test_open_nd2_file_and_folder(shared_data, tmp_path):
    one = Tileset.open(shared_data / "nd2" / "example-zstack.nd2")
    assert len(one) == 1 and one[0].shape == (11, 128, 128)
    for name in ("example-multichannel.nd2", "example-pbmc.nd2"):
        shutil.copy(shared_data / "nd2" / name, tmp_path / name)
    assert len(Tileset.open(tmp_path)) == 2


def test_open_ome_zarr_folder_and_hdf5(tmp_path):
    import h5py

    for i in range(2):
        g = MultiScaleGroup.create(
            tmp_path / "zarrs" / f"t{i}.zarr", shape=(2, 8, 8), dtype="u2", origin=(0, 0, 6 * i)
        )
        g.write_array(np.full((2, 8, 8), i + 1, np.uint16))
        g.mark_complete()
    ts = Tileset.open(tmp_path / "zarrs")
    assert len(ts) == 2
    np.testing.assert_allclose(ts.offsets[:, 2], [0, 6])
    with h5py.File(tmp_path / "masks.h5", "w") as f:
        f["a"] = np.ones((2, 8, 8), np.uint16)
        f["b"] = np.ones((2, 8, 8), np.uint16)
    ts = Tileset.open(tmp_path / "masks.h5", offsets=[(0, 0, 0), (0, 0, 5)])
    assert [t.name for t in ts] == ["a", "b"]
    with pytest.raises(UnsupportedFormatError, match="supported inputs are"):
        Tileset.open(tmp_path / "masks.h5")


def test_cli_info_on_several_formats(shared_data, tmp_path, capsys):
    assert main(["info", str(shared_data / "nd2" / "cluster.nd2")]) == 0
    assert "tiles       1" in capsys.readouterr().out
    write_tiff(tmp_path / "a.tif", np.zeros((2, 8, 8), np.uint8))
    write_tileconfig(tmp_path / "TileConfiguration.txt", ["a.tif"], [(0, 0, 0)])
    assert main(["info", str(tmp_path)]) == 0
    (tmp_path / "odd.csv").write_text("x")
    assert main(["info", str(tmp_path / "odd.csv")]) == 2
