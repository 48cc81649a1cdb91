"""Lazy BigDataViewer HDF5 reader: real files, our own writer, hand-made layouts, bad input."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from tilefuse.errors import (
    IncompatibleTilesError,
    MissingTileError,
    TilefuseError,
    UnsupportedFormatError,
)
from tilefuse.io.bdv import BdvView, propose_mipmaps, write_bdv
from tilefuse.io.bdv_read import BdvFile, BdvLevel, BdvSource
from tilefuse.source import PixelSource


@pytest.fixture
def pybdv_h5(shared_data):
    return shared_data / "bdv-h5" / "pybdv_example.h5"


@pytest.fixture
def mitosis_h5(shared_data):
    return shared_data / "bdv-h5" / "mitosis_small_hdf5.h5"


def make_bdv(path, views, *, resolutions=((1, 1, 1),), subdivisions=((16, 16, 16),), attrs=None):
    """A minimal BDV file by hand: views = {(timepoint, setup, level): array}; tables XYZ."""
    attrs = attrs or {}
    with h5py.File(path, "w") as f:
        for s in sorted({s for _, s, _ in views}):
            g = f.create_group(f"s{s:02d}")
            g["resolutions"] = np.asarray(resolutions, dtype=np.float64)
            g["subdivisions"] = np.asarray(subdivisions, dtype=np.int32)
            if s in attrs:
                g.attrs.create("dataType", **attrs[s])
        for (t, s, lvl), a in views.items():
            chunks = tuple(min(c, n) for c, n in zip(subdivisions[lvl][::-1], a.shape, strict=True))
            f.create_dataset(f"t{t:05d}/s{s:02d}/{lvl}/cells", data=a, chunks=chunks)
    return path


# -- real files ---------------------------------------------------------------------


def test_pybdv_example_levels_dtype_values(pybdv_h5):
    f = BdvFile(pybdv_h5)
    assert f.setups == [0] and f.timepoints == [0]
    assert f.dtype(0) == np.uint16
    levels = f.levels(0)
    assert [lv.shape for lv in levels] == [(6, 512, 512), (3, 256, 256)]
    assert [lv.factors for lv in levels] == [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    with h5py.File(pybdv_h5, "r") as h:
        sub = h["s00/subdivisions"][...]
        for lvl, lv in enumerate(levels):
            assert isinstance(lv, BdvLevel)
            ds = h[f"t00000/s00/{lvl}/cells"]
            assert lv.chunks == ds.chunks == tuple(sub[lvl][::-1])  # XYZ -> ZYX
            got = f.read(0, 0, lvl)
            assert got.dtype == np.uint16 and got.shape == lv.shape
            np.testing.assert_array_equal(got, ds[...])
    assert got.max() > 32767  # native uint16 in this file: values up to 65503 at level 1
    f.close()


def test_pybdv_example_chunks_are_zyx(pybdv_h5):
    # subdivisions [32, 16, 8] (XYZ) <-> chunks (8, 16, 32): the order is reversed
    assert BdvFile(pybdv_h5).levels(0)[0].chunks == (8, 16, 32)


def test_mitosis_legacy_int16_read_as_uint16(mitosis_h5):
    f = BdvFile(mitosis_h5)
    assert f.setups == [0, 1] and f.timepoints == [0, 1]
    for s in f.setups:
        assert f.dtype(s) == np.uint16
        assert f.levels(s) == [BdvLevel((1.0, 1.0, 1.0), (5, 196, 171), (4, 32, 32))]
    negative_raw = 0
    with h5py.File(mitosis_h5, "r") as h:
        assert "dataType" not in h["s00"].attrs  # legacy layout
        assert "__DATA_TYPES__" in h  # JHDF5 committed types: ignored, not a setup
        for t in f.timepoints:
            for s in f.setups:
                ds = h[f"t{t:05d}/s{s:02d}/0/cells"]
                assert ds.dtype == np.int16
                raw = ds[...]
                got = f.read(t, s)
                assert got.dtype == np.uint16
                np.testing.assert_array_equal(got, raw.view(np.uint16))
                negative_raw += int((raw < 0).sum())
                if (raw < 0).any():
                    assert got.max() > 32767
                    np.testing.assert_array_equal(
                        got[raw < 0], raw[raw < 0].astype(np.int32) + 65536
                    )
    assert negative_raw > 0  # the file does hold uint16 values above 32767


@pytest.mark.parametrize(
    "region",
    [
        (slice(1, 4), slice(10, 200), slice(33, 97)),
        (slice(0, 1), slice(0, 1), slice(0, 1)),
        (slice(2, 99), slice(500, 9999), slice(-20, None)),  # clipped like numpy
        (slice(3, 3), slice(0, 10), slice(0, 10)),  # empty
    ],
)
def test_region_reads_equal_slices_of_full_read(pybdv_h5, mitosis_h5, region):
    f = BdvFile(pybdv_h5)
    for lvl in (0, 1):
        full = f.read(0, 0, lvl)
        np.testing.assert_array_equal(f.read(0, 0, lvl, region), full[region])
    m = BdvFile(mitosis_h5)
    full = m.read(1, 0)
    np.testing.assert_array_equal(m.read(1, 0, region=region), full[region])


def test_region_as_start_stop_pairs(mitosis_h5):
    m = BdvFile(mitosis_h5)
    np.testing.assert_array_equal(
        m.read(0, 1, region=((1, 3), (5, 50), (7, 9))), m.read(0, 1)[1:3, 5:50, 7:9]
    )


def test_source_two_setups_as_channels(mitosis_h5):
    src = BdvSource(mitosis_h5, [1, 0], timepoint=1)
    assert isinstance(src, PixelSource)
    assert src.shape == (2, 5, 196, 171) and src.dtype == np.uint16
    assert src.factors == (1.0, 1.0, 1.0)
    f = BdvFile(mitosis_h5)
    region = (slice(1, 4), slice(20, 150), slice(3, 170))
    got = src.read(region)
    assert got.shape == (2, 3, 130, 167) and got.dtype == np.uint16
    np.testing.assert_array_equal(got[0], f.read(1, 1, region=region))
    np.testing.assert_array_equal(got[1], f.read(1, 0, region=region))
    assert got[1].max() > 32767 or f.read(1, 0).max() <= 32767
    single = BdvSource(mitosis_h5, 0)
    assert single.shape == (1, 5, 196, 171)
    np.testing.assert_array_equal(single.read(region)[0], f.read(0, 0, region=region))
    src.close()
    np.testing.assert_array_equal(src.read(region), got)  # reopens after close


def test_source_pickles_by_path(mitosis_h5):
    src = BdvSource(mitosis_h5, [0, 1])
    region = (slice(0, 5), slice(0, 64), slice(0, 64))
    before = src.read(region)  # the handle is open now
    blob = pickle.dumps(src)
    assert len(blob) < 10_000  # no pixels, no handle
    clone = pickle.loads(blob)
    assert clone.shape == src.shape and clone.dtype == src.dtype
    np.testing.assert_array_equal(clone.read(region), before)
    f = pickle.loads(pickle.dumps(BdvFile(mitosis_h5)))
    np.testing.assert_array_equal(f.read(0, 0, region=region), before[0])


def test_source_threaded_reads(pybdv_h5):
    src = BdvSource(pybdv_h5, [0])
    full = BdvFile(pybdv_h5).read(0, 0)
    regions = [
        (slice(z, z + 2), slice(y, y + 100), slice(x, x + 77))
        for z in range(0, 6, 2)
        for y in range(0, 512, 100)
        for x in range(0, 512, 77)
    ]
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(src.read, regions))
    for r, got in zip(regions, results, strict=True):
        np.testing.assert_array_equal(got[0], full[r])


# -- round trip with tilefuse's writer ------------------------------------------------


def _expected_levels(shape, voxel):
    res, sub = propose_mipmaps(shape[::-1], voxel[::-1])
    out = []
    for r, s in zip(res, sub, strict=True):
        f = tuple(r[::-1])
        lshape = tuple(-(-n // k) for n, k in zip(shape, f, strict=True))
        out.append(
            (
                tuple(float(k) for k in f),
                lshape,
                tuple(min(c, n) for c, n in zip(s[::-1], lshape, strict=True)),
            )
        )
    return out


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32])
def test_round_trip_with_writer(tmp_path, dtype):
    rng = np.random.default_rng(0)
    shape, voxel = (5, 300, 270), (2.0, 0.5, 0.5)
    if dtype == np.float32:
        data = rng.normal(size=shape).astype(np.float32)
    else:
        data = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    if dtype == np.uint16:
        data[0, 0, :3] = (32768, 40000, 65535)
        assert data.max() > 32767
    h5, _ = write_bdv(tmp_path / "rt.h5", [BdvView(data, voxel)])
    f = BdvFile(h5)
    assert f.dtype(0) == dtype
    got = f.read(0, 0)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, data)
    levels = f.levels(0)
    assert len(levels) > 1
    assert [tuple(lv) for lv in levels] == _expected_levels(shape, voxel)
    with h5py.File(h5, "r") as h:
        stored = h["t00000/s00/0/cells"].dtype
        assert stored == (np.int16 if dtype == np.uint16 else dtype)
        for lvl, lv in enumerate(levels):
            got = f.read(0, 0, lvl)
            assert got.shape == lv.shape and got.dtype == dtype
            ds = h[f"t00000/s00/{lvl}/cells"]
            np.testing.assert_array_equal(
                got, ds[...].view(dtype) if dtype == np.uint16 else ds[...]
            )
    src = BdvSource(h5, [0], level=1)
    assert src.shape == (1, *levels[1].shape)
    assert src.factors == levels[1].factors


def test_anisotropic_factors_are_zyx(tmp_path):
    # xyz resolutions [[1,1,1],[2,2,1],[4,4,2]] (thick z) -> zyx (1,2,2), (2,4,4)
    data = np.zeros((8, 600, 600), np.uint8)
    h5, _ = write_bdv(tmp_path / "aniso.h5", [BdvView(data, (4.0, 1.0, 1.0))])
    levels = BdvFile(h5).levels(0)
    assert [lv.factors for lv in levels] == [(1.0, 1.0, 1.0), (1.0, 2.0, 2.0), (2.0, 4.0, 4.0)]
    assert [lv.shape for lv in levels] == [(8, 600, 600), (8, 300, 300), (4, 150, 150)]


def test_several_setups_of_different_dtypes(tmp_path):
    a = np.arange(4 * 20 * 30, dtype=np.uint16).reshape(4, 20, 30) * 50
    b = (a // 300).astype(np.uint8)
    h5, _ = write_bdv(tmp_path / "multi.h5", [BdvView(a, (1, 1, 1)), BdvView(b, (1, 1, 1))])
    f = BdvFile(h5)
    assert f.setups == [0, 1]
    assert (f.dtype(0), f.dtype(1)) == (np.uint16, np.uint8)
    np.testing.assert_array_equal(f.read(0, 0), a)
    np.testing.assert_array_equal(f.read(0, 1), b)
    with pytest.raises(IncompatibleTilesError, match="dtype"):
        BdvSource(h5, [0, 1])


# -- hand-made layouts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "attr",
    [
        {"data": np.bytes_(b"float32")},  # fixed-length ASCII, as Java writes it
        {"data": np.array(b"float32", dtype="S12")},  # fixed-length, null-padded
        {"data": "float32"},  # variable-length UTF-8 str
        {"data": b"float32", "dtype": h5py.string_dtype("ascii")},  # variable-length bytes
        {"data": np.array([b"float32"])},  # a 1-element array
    ],
)
def test_data_type_attribute_forms(tmp_path, attr):
    a = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    h5 = make_bdv(tmp_path / "a.h5", {(0, 0, 0): a}, attrs={0: attr})
    f = BdvFile(h5)
    assert f.dtype(0) == np.float32
    np.testing.assert_array_equal(f.read(0, 0), a)


def test_big_endian_legacy_int16_keeps_bits(tmp_path):
    a = np.array([[[0, 1, -1, -32768, 32767]]], dtype=">i2")
    f = BdvFile(make_bdv(tmp_path / "be.h5", {(0, 0, 0): a}))
    got = f.read(0, 0)
    assert got.dtype == np.uint16 and got.dtype.isnative
    assert got.tolist() == [[[0, 1, 65535, 32768, 32767]]]


def test_uint16_dataset_without_attribute_is_uint16(tmp_path):
    a = np.array([[[0, 40000, 65535]]], dtype=np.uint16)
    f = BdvFile(make_bdv(tmp_path / "u.h5", {(0, 0, 0): a}))
    assert f.dtype(0) == np.uint16
    np.testing.assert_array_equal(f.read(0, 0), a)


def test_other_types_without_attribute_read_as_stored(tmp_path):
    # pybdv writes uint8 / float32 without dataType: keep what the writer meant
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    f = BdvFile(make_bdv(tmp_path / "u8.h5", {(0, 0, 0): a}))
    assert f.dtype(0) == np.uint8
    np.testing.assert_array_equal(f.read(0, 0), a)


def test_ids_sparse_wide_and_contiguous_datasets(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "ids.h5"
    with h5py.File(path, "w") as f:
        for s in (3, 100):
            f[f"s{s:02d}/resolutions"] = np.ones((1, 3), np.float32)  # pybdv: float32
            f[f"s{s:02d}/subdivisions"] = np.array([[4, 2, 1]], np.int64)  # pybdv: int64
            f[f"t00007/s{s:02d}/0/cells"] = a  # contiguous: chunks from subdivisions
        f["s5/resolutions"] = np.ones((1, 3))  # not s%02d: not a setup for BDV
        f["t12/s03/0/cells"] = a  # not t%05d
    r = BdvFile(path)
    assert r.setups == [3, 100] and r.timepoints == [7]
    assert r.levels(100) == [BdvLevel((1.0, 1.0, 1.0), (2, 3, 4), (1, 2, 4))]
    np.testing.assert_array_equal(r.read(7, 100), a.view(np.uint16))
    assert r.has_view(7, 3) and not r.has_view(0, 3)


def test_partitioned_file_external_links(tmp_path, monkeypatch):
    a = np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30
    make_bdv(tmp_path / "ds-00-00.h5", {(0, 0, 0): a})
    master = make_bdv(tmp_path / "ds.h5", {(0, 1, 0): a})  # s01 stored locally
    with h5py.File(master, "a") as f:
        f["s00/resolutions"] = np.ones((1, 3))
        f["s00/subdivisions"] = np.full((1, 3), 16, np.int32)
        f["t00000/s00/0/cells"] = h5py.ExternalLink("ds-00-00.h5", "/t00000/s00/0/cells")
        f["t00001/s00/0/cells"] = h5py.ExternalLink("ds-01-00.h5", "/t00001/s00/0/cells")
    monkeypatch.chdir(tmp_path.parent)  # links resolve next to the master file
    src = BdvSource(master, [0, 1])
    got = src.read((slice(0, 3), slice(0, 4), slice(0, 5)))
    np.testing.assert_array_equal(got[0], a.view(np.uint16))
    np.testing.assert_array_equal(got[1], a.view(np.uint16))
    with pytest.raises(MissingTileError, match=r"ds-01-00\.h5.*partition"):
        BdvFile(master).read(1, 0)


# -- bad input ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(MissingTileError, match="nope.h5"):
        BdvFile(path)
    with pytest.raises(FileNotFoundError):
        BdvSource(path, [0])


def test_text_file_named_h5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5 at all\n")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.h5.*expected a BigDataViewer HDF5"):
        BdvFile(path)
    with pytest.raises(OSError):
        BdvSource(path, [0])


def test_xml_given_instead_of_h5(tmp_path):
    path = tmp_path / "dataset.xml"
    path.write_text('<?xml version="1.0"?><SpimData/>')
    with pytest.raises(UnsupportedFormatError, match="<hdf5>"):
        BdvFile(path)


def test_directory(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="not a file"):
        BdvFile(tmp_path)


def test_hdf5_without_setups(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((2, 3, 4))
        f["t00000/whatever"] = 1
    with pytest.raises(UnsupportedFormatError, match=r"plain\.h5.*/sNN"):
        BdvFile(path)


def test_setup_without_tables(tmp_path):
    path = tmp_path / "notables.h5"
    with h5py.File(path, "w") as f:
        f["s00/resolutions"] = np.ones((1, 3))
        f["t00000/s00/0/cells"] = np.zeros((2, 3, 4), np.int16)
    with pytest.raises(UnsupportedFormatError, match=r"notables\.h5.*/s00/subdivisions is missing"):
        BdvFile(path)


def test_bad_data_type_attribute(tmp_path):
    a = np.zeros((1, 2, 3), np.float32)
    h5 = make_bdv(tmp_path / "bad.h5", {(0, 0, 0): a}, attrs={0: {"data": np.bytes_(b"float16")}})
    with pytest.raises(UnsupportedFormatError, match=r"dataType.*float16.*expected one of"):
        BdvFile(h5)


def test_missing_cells_and_unknown_ids(tmp_path):
    a = np.zeros((2, 3, 4), np.int16)
    h5 = make_bdv(tmp_path / "gaps.h5", {(0, 0, 0): a, (1, 1, 0): a})
    f = BdvFile(h5)
    assert f.setups == [0, 1] and f.timepoints == [0, 1]
    with pytest.raises(MissingTileError, match=r"gaps\.h5.*/t00001/s00/0/cells"):
        f.read(1, 0)
    with pytest.raises(MissingTileError, match="setup 7"):
        f.read(0, 7)
    with pytest.raises(ValueError, match="level"):
        f.read(0, 0, level=1)
    assert f.levels(1)[0].shape == (2, 3, 4)  # from the first timepoint holding setup 1
    with pytest.raises(MissingTileError, match="t00001/s00"):
        BdvSource(h5, [0, 1], timepoint=1)
    assert issubclass(MissingTileError, TilefuseError)


def test_source_shapes_must_match(tmp_path):
    h5 = make_bdv(
        tmp_path / "shapes.h5",
        {(0, 0, 0): np.zeros((2, 3, 4), np.int16), (0, 1, 0): np.zeros((2, 3, 5), np.int16)},
    )
    with pytest.raises(IncompatibleTilesError, match=r"\(2, 3, 4\).*\(2, 3, 5\)"):
        BdvSource(h5, [0, 1])
