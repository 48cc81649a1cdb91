"""Every built-in pixel source passes the shared contract `tilefuse.testing.SourceTests`."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from tilefuse.io.bdv_read import BdvSource
from tilefuse.io.h5 import H5Source
from tilefuse.io.ome_zarr import MultiScaleGroup
from tilefuse.io.ome_zarr_tiles import OmeZarrSource
from tilefuse.io.tiff import TiffSource, write_tiff
from tilefuse.source import ArraySource, ChannelSubset, DownscaledSource
from tilefuse.testing import SourceTests


def _truth(shape=(2, 5, 23, 31), dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 60000 if dtype == np.uint16 else 250, shape).astype(dtype)


class TestArraySource4D(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth()

    @pytest.fixture
    def source(self, expected):
        return ArraySource(expected)


class TestArraySource2D(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((1, 1, 17, 13), np.float32)

    @pytest.fixture
    def source(self, expected):
        return ArraySource(expected[0, 0])


@pytest.mark.parametrize("method", ["mean", "stride"])
class TestDownscaledSource(SourceTests):
    @pytest.fixture
    def expected(self, method):
        full = _truth((1, 6, 20, 22), np.uint16)
        if method == "stride":
            return full[:, ::2, ::3, ::2]
        # integer mean of the 2x3x2 blocks, rounded half up, computed independently here
        out = np.zeros((1, 3, 7, 11))
        for z in range(3):
            for y in range(7):
                for x in range(11):
                    ys = slice(3 * y, min(3 * y + 3, 20))
                    block = full[0, 2 * z : 2 * z + 2, ys, 2 * x : 2 * x + 2].astype(np.float64)
                    out[0, z, y, x] = np.floor(block.mean() + 0.5)
        return out.astype(np.uint16)

    @pytest.fixture
    def source(self, method):
        return DownscaledSource(ArraySource(_truth((1, 6, 20, 22), np.uint16)), (2, 3, 2), method)


class TestChannelSubset(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((3, 4, 9, 10))[[2, 0]]

    @pytest.fixture
    def source(self):
        return ChannelSubset(ArraySource(_truth((3, 4, 9, 10))), [2, 0])


@pytest.mark.parametrize("compression", [None, "zlib"])
class TestTiffSource(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((2, 4, 21, 19))

    @pytest.fixture
    def source(self, tmp_path, expected, compression):
        path = tmp_path / "t.tif"
        if compression is None:
            write_tiff(path, expected)  # ImageJ ZCYX, memory-mapped reads
        else:
            tifffile.imwrite(
                path,
                expected,
                compression=compression,
                photometric="minisblack",
                metadata={"axes": "CZYX"},
            )
        return TiffSource(path)


class TestJp2Source(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((1, 3, 24, 20))

    @pytest.fixture
    def source(self, tmp_path, expected):
        from tilefuse.io.jp2 import Jp2Source, write_jp2

        return Jp2Source(write_jp2(tmp_path / "t.jp2", expected[0]))


class TestJp2SourceRealRgb(SourceTests):
    @pytest.fixture
    def expected(self, shared_data):
        import imagecodecs

        rgb = imagecodecs.jpeg2k_decode((shared_data / "jp2" / "text_GBR.jp2").read_bytes())
        return np.moveaxis(rgb, -1, 0)[:, None]

    @pytest.fixture
    def source(self, shared_data):
        from tilefuse.io.jp2 import Jp2Source

        return Jp2Source(shared_data / "jp2" / "text_GBR.jp2", components="channels")


class TestH5Source(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((1, 5, 16, 18), np.uint8)

    @pytest.fixture
    def source(self, tmp_path, expected):
        import h5py

        with h5py.File(tmp_path / "t.h5", "w") as f:
            f.create_dataset("tiles/a", data=expected[0], chunks=(2, 8, 8))
        return H5Source(tmp_path / "t.h5", "tiles/a")


class TestNd2Source(SourceTests):
    @pytest.fixture
    def expected(self, shared_data):
        import nd2

        with nd2.ND2File(shared_data / "nd2" / "cluster.nd2") as f:
            data = f.asarray()  # (T, Z, C, Y, X)
        return np.moveaxis(data[1], 1, 0)

    @pytest.fixture
    def source(self, shared_data):
        from tilefuse.io.nd2 import Nd2Source

        return Nd2Source(shared_data / "nd2" / "cluster.nd2", timepoint=1)


class TestOmeZarrSource(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth((2, 3, 20, 17))

    @pytest.fixture
    def source(self, tmp_path, expected):
        g = MultiScaleGroup.create(
            tmp_path / "img.ome.zarr",
            shape=expected.shape,
            dtype=expected.dtype,
            chunks=(2, 8, 8),
            channel_names=["a", "b"],
        )
        g.write_array(expected)
        g.mark_complete()
        return OmeZarrSource(tmp_path / "img.ome.zarr", "0", ["c", "z", "y", "x"])


class TestBdvSourceReal(SourceTests):
    """The real pybdv file (level 1) and the int16-stored uint16 Mastodon file (2 setups)."""

    @pytest.fixture(params=["pybdv", "mitosis"])
    def case(self, request, shared_data):
        if request.param == "pybdv":
            return shared_data / "bdv-h5" / "pybdv_example.h5", [0], 0, 1
        return shared_data / "bdv-h5" / "mitosis_small_hdf5.h5", [0, 1], 1, 0

    @pytest.fixture
    def expected(self, case):
        import h5py

        path, setups, tp, level = case
        with h5py.File(path, "r") as f:
            data = [f[f"t{tp:05d}/s{s:02d}/{level}/cells"][()] for s in setups]
        out = np.stack(data)
        return out.view(np.uint16) if out.dtype == np.int16 else out

    @pytest.fixture
    def source(self, case):
        path, setups, tp, level = case
        return BdvSource(path, setups, timepoint=tp, level=level)


class TestScaledSource(SourceTests):
    @pytest.fixture
    def expected(self):
        raw = _truth((2, 3, 12, 14)).astype(np.float32)
        lo = np.array([1000.0, 5000.0]).reshape(2, 1, 1, 1)
        hi = np.array([50000.0, 30000.0]).reshape(2, 1, 1, 1)
        return np.rint(np.clip((raw - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)

    @pytest.fixture
    def source(self):
        from tilefuse.intensity import ScaledSource

        return ScaledSource(ArraySource(_truth((2, 3, 12, 14))), [1000, 5000], [50000, 30000])


class TestMappedSource(SourceTests):
    @pytest.fixture
    def lut(self):
        return np.arange(250, dtype=np.uint32)[::-1] * 3

    @pytest.fixture
    def expected(self, lut):
        return lut[_truth((1, 3, 11, 9), np.uint8)]

    @pytest.fixture
    def source(self, lut):
        from tilefuse.labels import MappedSource

        return MappedSource(ArraySource(_truth((1, 3, 11, 9), np.uint8)), lut, np.uint32)


class TestCorrectedSource(SourceTests):
    @pytest.fixture
    def profiles(self):
        rng = np.random.default_rng(3)
        flat = rng.uniform(0.8, 1.2, (2, 13, 15)).astype(np.float32)
        dark = rng.uniform(0, 20, (2, 13, 15)).astype(np.float32)
        return flat, dark

    @pytest.fixture
    def expected(self, profiles):
        flat, dark = profiles
        raw = _truth((2, 3, 13, 15)).astype(np.float32)
        out = (raw - dark[:, None]) / flat[:, None] * 0.5 + 7
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)

    @pytest.fixture
    def source(self, profiles):
        from tilefuse.correction import CorrectedSource

        flat, dark = profiles
        raw = ArraySource(_truth((2, 3, 13, 15)))
        return CorrectedSource(raw, flatfield=flat, darkfield=dark, gain=0.5, offset=7)


def test_unreadable_source_is_a_source_that_raises_on_read():
    from tilefuse.errors import MissingTileError
    from tilefuse.io.project import UnreadableSource
    from tilefuse.source import Source

    src = UnreadableSource((1, 2, 3, 4), "u2", "images.n5 is not here")
    assert isinstance(src, Source) and src.shape == (1, 2, 3, 4) and src.dtype == np.uint16
    with pytest.raises(MissingTileError, match="images.n5 is not here"):
        src.read((slice(0, 1), slice(0, 1), slice(0, 1)))


def test_max_open_bounds_decoded_jp2_tiles(tmp_path):
    """At most Jp2Source.max_open tiles stay decoded; the least recently read goes first."""

    from tilefuse.io.jp2 import Jp2Source, write_jp2

    tiles = [_truth((1, 2, 16, 16), seed=i)[0] for i in range(Jp2Source.max_open + 3)]
    sources = [Jp2Source(write_jp2(tmp_path / f"t{i}.jp2", t)) for i, t in enumerate(tiles)]
    region = (slice(0, 2), slice(0, 16), slice(0, 16))
    for s, t in zip(sources, tiles, strict=True):
        np.testing.assert_array_equal(s.read(region)[0], t)
        assert sum(x.is_open for x in sources) <= Jp2Source.max_open
    assert [x.is_open for x in sources][-Jp2Source.max_open :] == [True] * Jp2Source.max_open
    sources[-Jp2Source.max_open].read(region)  # touch the oldest open one ...
    sources[0].read(region)  # ... so opening the first again evicts the next oldest
    assert sources[-Jp2Source.max_open].is_open and sources[0].is_open
    assert not sources[-Jp2Source.max_open + 1].is_open
    for s, t in zip(sources, tiles, strict=True):  # evicted tiles decode again on demand
        np.testing.assert_array_equal(s.read(region)[0], t)


_FORKED: dict = {}


def _read_in_child(queue):
    src = _FORKED["src"]
    queue.put((src.is_open, src.read((slice(0, 2), slice(0, 16), slice(0, 18)))))
    src.close()  # closes the child's own handle only


def test_a_forked_child_reopens_and_leaves_the_parents_handle_alone(tmp_path):
    """After a fork the inherited handle is not used (h5py handles are per process)."""
    import multiprocessing as mp

    import h5py

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    data = _truth((1, 5, 16, 18), np.uint8)[0]
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["a"] = data
    src = H5Source(tmp_path / "t.h5", "a")
    src.read((slice(0, 1), slice(0, 1), slice(0, 1)))
    assert src.is_open
    _FORKED["src"] = src
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(queue,))
    child.start()
    was_open, got = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert not was_open  # the parent's handle does not count as open in the child
    np.testing.assert_array_equal(got[0], data[:2])
    assert src.is_open  # the parent's handle survived the child's close
    np.testing.assert_array_equal(src.read((slice(2, 5), slice(0, 16), slice(0, 18)))[0], data[2:])
    src.close()
    _FORKED.clear()


class TestSampleTile(SourceTests):
    """Lazy generated tiles (benchmarks of tens of GB without files) keep the contract too."""

    @pytest.fixture
    def sample(self):
        from tilefuse.synthetic import SyntheticSample

        return SyntheticSample((12, 60, 70), seed=4, blob_radius=3)

    @pytest.fixture
    def expected(self, sample):
        return sample.image((slice(2, 9), slice(10, 40), slice(5, 50)))[None]

    @pytest.fixture
    def source(self, sample):
        from tilefuse.synthetic import SampleTile

        return SampleTile(sample, (2, 10, 5), (7, 30, 45))
