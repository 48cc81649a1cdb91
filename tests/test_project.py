"""Tilesets from BigStitcher/BDV projects, and per-tile BDV export read back."""

import lxml  # noqa: F401
import numpy as np
import pytest

from tilefuse import MissingTileError, Tileset
from tilefuse.cli import main
from tilefuse.synthetic import cut_tiles, make_volume


def test_sixteen_tile_project_without_images(shared_data, capsys):
    xml = shared_data / "bigstitcher-xml" / "bigstitcher_6.xml"
    ts = Tileset.from_bigstitcher(xml)
    # 16 views = 4 tiles x 2 channels x 2 illuminations: channels and illuminations of a
    # tile are channels of one Tile, never extra tiles
    assert len(ts) == 4 and ts.n_channels == 4
    assert len(set(ts[0].channels)) == 4 and "illumination" in ts[0].channels[1]
    assert ts[0].shape == (615, 2048, 2048)
    offs = ts.offsets
    # a 2 x 2 grid in micrometres: two y and two x positions, the same z
    assert len(np.unique(np.round(offs[:, 0], 6))) == 1
    for ax in (1, 2):
        u = np.unique(np.round(offs[:, ax], 3))
        assert len(u) == 2
        pitch = u[1] - u[0]
        # neighbours overlap: the pitch is less than the tile extent
        assert 0 < pitch < ts[0].shape[ax] * ts.voxel_size[ax]
    assert main(["info", str(xml)]) == 0
    assert "tiles       4" in capsys.readouterr().out
    with pytest.raises(MissingTileError, match="cannot read image loader|not found"):
        ts[0].read(((0, 1), (0, 1), (0, 1)))


def test_bdv_project_reads_pixels(shared_data):

    ts = Tileset.from_bigstitcher(shared_data / "bdv-h5" / "pybdv_example.xml")
    assert len(ts) == 1 and ts[0].shape == (6, 512, 512) and ts.dtype == np.uint16


def test_per_tile_bdv_export_round_trip(tmp_path):
    vol, _ = make_volume((6, 100, 120), seed=4)
    m = cut_tiles(vol, (2, 2), overlap=0.3)
    vs = np.array([0.5, 0.2, 0.2])
    ts = Tileset.from_arrays(m.tiles, m.offsets_px * vs, voxel_size=vs)
    _, xml = ts.to_bdv(tmp_path / "tiles.h5")
    back = Tileset.from_bigstitcher(xml)
    assert len(back) == 4
    np.testing.assert_allclose(back.offsets, ts.offsets, atol=1e-9)
    np.testing.assert_allclose(back.voxel_size, vs)
    for a, b in zip(back, ts, strict=True):
        np.testing.assert_array_equal(a.read(), b.read())
    np.testing.assert_array_equal(back.fuse(), vol)


def test_bad_project_input(tmp_path):
    from tilefuse.errors import UnsupportedFormatError
    from tilefuse.io.bdv import BdvView, write_bdv
    from tilefuse.io.bdv_read import BdvFile

    h5, xml = write_bdv(tmp_path / "a.h5", [BdvView(np.ones((4, 64, 64), np.uint16), (1, 1, 1))])
    text = xml.read_text()
    # an affine with 11 numbers
    (tmp_path / "eleven.xml").write_text(text.replace("<affine>1.0 0.0 0.0", "<affine>0.0 0.0", 1))
    with pytest.raises(
        UnsupportedFormatError, match=r"eleven.xml: <ViewTransform><affine>.*12 numbers"
    ):
        Tileset.from_bigstitcher(tmp_path / "eleven.xml")
    # a registration for a setup that does not exist (and none for the one that does)
    (tmp_path / "orphan.xml").write_text(text.replace('setup="0"', 'setup="7"'))
    with pytest.raises(UnsupportedFormatError, match=r"orphan.xml: no <ViewRegistration"):
        Tileset.from_bigstitcher(tmp_path / "orphan.xml")
    # malformed XML
    (tmp_path / "broken.xml").write_text(text[: len(text) // 2])
    with pytest.raises(UnsupportedFormatError, match="broken.xml"):
        Tileset.from_bigstitcher(tmp_path / "broken.xml")
    # a missing .h5: the project opens, reading pixels names the file
    h5.rename(tmp_path / "elsewhere.h5")
    ts = Tileset.from_bigstitcher(xml)
    with pytest.raises(MissingTileError, match="a.h5"):
        ts[0].read()
    # a truncated HDF5 file
    data = (tmp_path / "elsewhere.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedFormatError, match="cut.h5"):
        BdvFile(tmp_path / "cut.h5").read(0, 0)
