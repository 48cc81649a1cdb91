"""The demo data: a procedural sample generated region by region; rows/cols grow the mosaic."""

import numpy as np
import pytest
import tifffile

from tilefuse.cli import _parse_size, main
from tilefuse.demo import tile_shape_for_size, write_demo
from tilefuse.io.tileconfig import read_tileconfig
from tilefuse.synthetic import SyntheticSample


def test_any_region_of_the_sample_equals_the_same_region_of_the_whole():
    s = SyntheticSample((20, 90, 110), seed=3)
    whole = tuple(slice(0, n) for n in s.shape)
    img, lab = s.image(whole), s.labels(whole)
    for region in [
        (slice(0, 20), slice(0, 90), slice(0, 110)),
        (slice(3, 11), slice(40, 77), slice(5, 6)),
        (slice(19, 20), slice(89, 90), slice(0, 110)),
    ]:
        np.testing.assert_array_equal(s.image(region), img[region])
        np.testing.assert_array_equal(s.labels(region), lab[region])
    # every blob keeps its centre voxel, so the object count is exact
    assert len(np.unique(lab)) - 1 == s.n_objects
    assert lab[tuple(s.centres.T)].tolist() == list(range(1, s.n_objects + 1))
    # blobs are bright: the image is brighter inside labels than outside
    assert img[lab > 0].mean() > img[lab == 0].mean() + 5000


def test_regions_are_generated_in_slabs_with_bounded_memory(monkeypatch):
    """Reading a region costs about the region: the generator works in z-slabs (a 33 MB
    region used to cost 400 MB of float32 temporaries, which made cluster workers grow)."""
    import tracemalloc

    s = SyntheticSample((24, 120, 130), seed=5, n_blobs=60)
    region = (slice(2, 23), slice(7, 120), slice(0, 111))
    img, lab = s.image(region), s.labels(region)
    monkeypatch.setattr(SyntheticSample, "SLAB_VOXELS", 111 * 113 * 2 + 5)  # 2 planes a slab
    np.testing.assert_array_equal(s.image(region), img)
    np.testing.assert_array_equal(s.labels(region), lab)
    monkeypatch.undo()
    big = SyntheticSample((64, 512, 512), seed=1, n_blobs=200)
    tracemalloc.start()
    try:
        out = big.image((slice(0, 64), slice(0, 512), slice(0, 512)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes + 32 * 2**20, peak / 2**20


def test_more_rows_and_columns_make_a_bigger_sample_with_the_same_tiles(tmp_path):
    small = write_demo(tmp_path / "a", grid=(2, 2), tile_shape=(6, 40, 50))
    big = write_demo(tmp_path / "b", grid=(3, 4), tile_shape=(6, 40, 50))
    for d, n in [(small, 4), (big, 12)]:
        files = sorted(d.folder.glob("tile_*.tif"))
        assert len(files) == n
        assert {tifffile.imread(f).shape for f in files} == {(6, 40, 50)}
    assert big.sample.shape[1] > small.sample.shape[1]
    assert big.sample.shape[2] > small.sample.shape[2]
    # every tile is the sample at its position; labels renumbered per tile, same partition
    cfg = read_tileconfig(big.tileconfig)
    for e in cfg.entries:
        z, y, x = (int(v) for v in e.position_px)
        tile = tifffile.imread(big.folder / e.file)
        region = (slice(z, z + 6), slice(y, y + 40), slice(x, x + 50))
        np.testing.assert_array_equal(tile, big.sample.image(region))
        ltile = tifffile.imread(big.folder / "labels" / e.file.replace("tile_", "labels_"))
        truth = big.sample.labels(region)
        assert np.array_equal(ltile > 0, truth > 0)
        pairs = np.unique(np.stack([ltile[truth > 0], truth[truth > 0]]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_size_sets_the_tile_size():
    z, y, x = tile_shape_for_size(2e9, (6, 6))
    assert y == x
    assert 36 * z * y * x * 2 == pytest.approx(2e9, rel=0.01)
    with pytest.raises(ValueError, match="too small"):
        tile_shape_for_size(1000, (6, 6))
    assert _parse_size("2GB") == 2e9
    assert _parse_size("500M") == 5e8
    assert _parse_size("1.5g") == 1.5e9


def test_demo_command_grows_and_checks_itself(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                str(tmp_path / "d"),
                "--rows",
                "2",
                "--cols",
                "4",
                "--size",
                "6MB",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "matches ground truth exactly: True" in out
    assert "8 tiles of" in out
    assert len(list((tmp_path / "d").glob("tile_*.tif"))) == 8
