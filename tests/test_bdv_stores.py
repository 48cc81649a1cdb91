"""BigStitcher projects whose pixels are N5 (``bdv.n5``, ``bdv.n5.cloud``) or OME-Zarr
(``bdv.multimg.zarr`` 1.0 and 3.0), written here by independent libraries (TensorStore,
zarr-python) following the bdv-core / AllenOMEZarrLoader layouts, read locally and from a local
S3-compatible server (moto, on 127.0.0.1, started and stopped by these tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import SHARED_DATA
from tilefuse import Tileset
from tilefuse.errors import SelectionError
from tilefuse.io.bdv_stores import BdvN5, BdvN5Source, ZarrViewSource
from tilefuse.synthetic import cut_tiles, make_volume
from tilefuse.testing import SourceTests

ts = pytest.importorskip("tensorstore")

LINT = SHARED_DATA.parent / "tools" / "spimdata_lint.py"
VOXEL = (1.0, 0.5, 0.5)  # (z, y, x) um
LEVELS = ((1, 1, 1), (1, 2, 2), (2, 4, 4))  # (z, y, x) strides of the stored levels


def _truth(dtype=np.uint16, n_channels=2):
    vols = [make_volume((6, 24, 60), seed=c, n_blobs=6, dtype=dtype)[0] for c in range(2)]
    vol = np.stack(vols[:n_channels])
    return vol, cut_tiles(vol, (1, 2), tile_shape=(24, 36))


def _levels(tile):
    return [tile[::fz, ::fy, ::fx] for fz, fy, fx in LEVELS]


def _xml(path, loader, mosaic, n_channels, timepoints=(0,)):
    """A BigStitcher project: calibration diag(v / min v) and a grid translation per view."""
    root = ET.Element("SpimData", version="0.2")
    ET.SubElement(root, "BasePath", type="relative").text = "."
    seq = ET.SubElement(root, "SequenceDescription")
    seq.append(loader)
    setups = ET.SubElement(seq, "ViewSetups")
    n_tiles = len(mosaic.tiles)
    for tile in range(n_tiles):
        for c in range(n_channels):
            vs = ET.SubElement(setups, "ViewSetup")
            ET.SubElement(vs, "id").text = str(tile * n_channels + c)
            ET.SubElement(vs, "name").text = f"t{tile}c{c}"
            z, y, x = mosaic.tiles[tile].shape[-3:]
            ET.SubElement(vs, "size").text = f"{x} {y} {z}"
            vox = ET.SubElement(vs, "voxelSize")
            ET.SubElement(vox, "unit").text = "µm"
            ET.SubElement(vox, "size").text = f"{VOXEL[2]} {VOXEL[1]} {VOXEL[0]}"
            attrs = ET.SubElement(vs, "attributes")
            for k, v in (("illumination", 0), ("channel", c), ("tile", tile), ("angle", 0)):
                ET.SubElement(attrs, k).text = str(v)
    for name, tag, ids in (
        ("illumination", "Illumination", [0]),
        ("channel", "Channel", range(n_channels)),
        ("tile", "Tile", range(n_tiles)),
        ("angle", "Angle", [0]),
    ):
        block = ET.SubElement(setups, "Attributes", name=name)
        for k in ids:
            e = ET.SubElement(block, tag)
            ET.SubElement(e, "id").text = str(k)
            ET.SubElement(e, "name").text = str(k)
    tps = ET.SubElement(seq, "Timepoints", type="list")
    for t in timepoints:
        ET.SubElement(ET.SubElement(tps, "Timepoint"), "id").text = str(t)
    regs = ET.SubElement(root, "ViewRegistrations")
    cal = np.asarray(VOXEL[::-1]) / min(VOXEL)
    for t in timepoints:
        for tile in range(n_tiles):
            z, y, x = mosaic.offsets_px[tile] * np.asarray(VOXEL) / min(VOXEL)
            for c in range(n_channels):
                reg = ET.SubElement(
                    regs, "ViewRegistration", timepoint=str(t), setup=str(tile * n_channels + c)
                )
                for name, affine in (
                    ("Translation to Regular Grid", f"1 0 0 {x} 0 1 0 {y} 0 0 1 {z}"),
                    ("calibration", f"{cal[0]} 0 0 0 0 {cal[1]} 0 0 0 0 {cal[2]} 0"),
                ):
                    tr = ET.SubElement(reg, "ViewTransform", type="affine")
                    ET.SubElement(tr, "Name").text = name
                    ET.SubElement(tr, "affine").text = affine
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


# -- writers (independent of tilefuse) ---------------------------------------------------------
def _write_bdv_n5(root: Path, mosaic, n_channels, timepoints=(0,)):
    """BDV N5 with TensorStore, per bdv-core's BdvN5Format (x-first dims, gzip)."""
    kv = ts.KvStore.open({"driver": "file", "path": f"{root}/"}).result()
    kv.write("attributes.json", json.dumps({"n5": "4.0.0"})).result()
    dtype = np.dtype(mosaic.tiles[0].dtype)
    for tile, data in enumerate(mosaic.tiles):
        for c in range(n_channels):
            setup = tile * n_channels + c
            factors = [[fx, fy, fz] for fz, fy, fx in LEVELS]
            attrs = {"downsamplingFactors": factors, "dataType": dtype.name}
            kv.write(f"setup{setup}/attributes.json", json.dumps(attrs)).result()
            for t in timepoints:
                for lvl, arr in enumerate(_levels(data[c])):
                    spec = {
                        "driver": "n5",
                        "kvstore": {
                            "driver": "file",
                            "path": f"{root}/setup{setup}/timepoint{t}/s{lvl}/",
                        },
                        "metadata": {
                            "dimensions": list(arr.shape[::-1]),
                            "blockSize": [16, 16, 4],
                            "dataType": dtype.name,
                            "compression": {"type": "gzip", "level": 4},
                            "downsamplingFactors": factors[lvl],
                        },
                        "create": True,
                    }
                    ts.open(spec).result()[...] = (arr + t).T if dtype.kind != "f" else arr.T


def _n5_loader(location, fmt="bdv.n5"):
    loader = ET.Element("ImageLoader", format=fmt, version="1.1" if fmt == "bdv.n5" else "0.1")
    kind = "relative" if not str(location).startswith("s3://") else "absolute"
    ET.SubElement(loader, "n5", type=kind).text = str(location)
    return loader


def _write_ome_zarr(group_path: Path, levels, zarr_format, five_d):
    """One OME-Zarr multiscale image with zarr-python (levels named 0, 1, 2)."""
    g = zarr.open_group(str(group_path), mode="w", zarr_format=zarr_format)
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    if five_d:
        axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, *axes]
    datasets = []
    for lvl, (arr, f) in enumerate(zip(levels, LEVELS, strict=True)):
        scale = [float(v * k) for v, k in zip(VOXEL, f, strict=True)]
        data = arr
        if five_d:
            scale = [1.0, 1.0, *scale]
            data = arr  # already (t, c, z, y, x)
        a = g.create_array(str(lvl), shape=data.shape, dtype=data.dtype, chunks=data.shape)
        a[...] = data
        datasets.append(
            {"path": str(lvl), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    if zarr_format == 3:
        g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    else:
        g.attrs["multiscales"] = ms


def _write_multimg_zarr(root: Path, mosaic, n_channels, version):
    """A bdv.multimg.zarr container: 3.0 = one 5D (t, c, z, y, x) image per tile, views picked
    by ``indicies="c t"``; 1.0 (AIND) = one 3D zarr v2 image per view."""
    loader = ET.Element("ImageLoader", format="bdv.multimg.zarr", version=version)
    ET.SubElement(loader, "zarr", type="relative").text = root.name
    zgroups = ET.SubElement(loader, "zgroups")
    for tile, data in enumerate(mosaic.tiles):
        if version == "3.0":
            levels = [
                np.stack(lv)[None]
                for lv in zip(*[_levels(data[c]) for c in range(n_channels)], strict=True)
            ]
            _write_ome_zarr(root / f"tile{tile}.zarr", levels, 3, five_d=True)
        for c in range(n_channels):
            setup = tile * n_channels + c
            if version == "3.0":
                ET.SubElement(
                    zgroups, "zgroup", setup=str(setup), tp="0", path=f"tile{tile}.zarr",
                    indicies=f"{c} 0",
                )  # fmt: skip
            else:
                name = f"tile_{tile:04d}_ch_{c}.zarr"
                _write_ome_zarr(root / name, _levels(data[c]), 2, five_d=False)
                z = ET.SubElement(zgroups, "zgroup", setup=str(setup), timepoint="0")
                ET.SubElement(z, "path").text = name
    return loader


# -- local ---------------------------------------------------------------------------------------
def test_bdv_n5_from_tensorstore_reads_every_level_and_fuses(tmp_path):
    vol, mosaic = _truth()
    _write_bdv_n5(tmp_path / "dataset.n5", mosaic, 2)
    xml = _xml(tmp_path / "dataset.xml", _n5_loader("dataset.n5"), mosaic, 2)
    tiles = Tileset.open(xml)
    assert len(tiles) == 2 and tiles.n_channels == 2 and tiles.dtype == np.uint16
    np.testing.assert_allclose(tiles.offsets, mosaic.offsets_px * VOXEL, atol=1e-9)
    n5 = BdvN5(tmp_path / "dataset.n5")
    assert n5.setups == [0, 1, 2, 3] and n5.timepoints(0) == [0]
    for tile, data in enumerate(mosaic.tiles):
        for lvl, f in enumerate(LEVELS):
            src = BdvN5Source(n5, [2 * tile, 2 * tile + 1], level=lvl)
            assert src.factors == tuple(float(v) for v in f)
            want = np.stack([_levels(data[c])[lvl] for c in range(2)])
            np.testing.assert_array_equal(src.read((slice(None),) * 3), want)
            # a partial region crossing chunk borders
            np.testing.assert_array_equal(
                src.read((slice(1, 3), slice(3, 19), slice(5, 30))), want[:, 1:3, 3:19, 5:30]
            )
    np.testing.assert_array_equal(tiles.fuse(blend="overwrite"), vol)
    with pytest.raises(SelectionError, match="level"):
        BdvN5Source(n5, 0, level=3)


@pytest.mark.parametrize(
    "dtype",
    [
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float32",
        "float64",
    ],
)
def test_bdv_n5_every_dtype(tmp_path, dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:  # the extremes of the type, not only small values
        data = rng.integers(info.min, info.max, (1, 5, 24, 36), dtype=dtype, endpoint=True)
    else:
        data = rng.standard_normal((1, 5, 24, 36)).astype(dtype)
    mosaic = cut_tiles(data, (1, 1), tile_shape=(24, 36))
    _write_bdv_n5(tmp_path / "d.n5", mosaic, 1)
    xml = _xml(tmp_path / "d.xml", _n5_loader("d.n5"), mosaic, 1)
    tile = Tileset.open(xml)[0]
    assert tile.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tile.read(), data[0])


@pytest.mark.parametrize("version", ["3.0", "1.0"])
def test_multimg_zarr_reads_every_level_and_fuses(tmp_path, version):
    vol, mosaic = _truth()
    loader = _write_multimg_zarr(tmp_path / "tiles.ome.zarr", mosaic, 2, version)
    xml = _xml(tmp_path / "dataset.xml", loader, mosaic, 2)
    tiles = Tileset.open(xml)
    assert len(tiles) == 2 and tiles.n_channels == 2
    for tile, data in enumerate(mosaic.tiles):
        groups = [tiles[tile].source.views[c].location for c in range(2)]
        for lvl, f in enumerate(LEVELS):
            src = ZarrViewSource(groups, [v.indices for v in tiles[tile].source.views], lvl)
            assert src.factors == tuple(float(v) for v in f)
            want = np.stack([_levels(data[c])[lvl] for c in range(2)])
            np.testing.assert_array_equal(src.read((slice(None),) * 3), want)
    np.testing.assert_array_equal(tiles.fuse(blend="overwrite"), vol)


def test_missing_tensorstore_names_the_extra(tmp_path, monkeypatch):
    import sys

    _, mosaic = _truth(n_channels=1)
    _write_bdv_n5(tmp_path / "d.n5", mosaic, 1)
    xml = _xml(tmp_path / "d.xml", _n5_loader("d.n5"), mosaic, 1)
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # import fails
    tiles = Tileset.open(xml)  # the project still opens: shapes and positions are in the XML
    with pytest.raises(ImportError, match=r"tilefuse\[n5\]"):
        tiles[0].read()


# -- a local S3-compatible server ---------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 (never a real cloud), stopped after the module."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="lab-bucket")
    try:
        yield endpoint, client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _upload(client, folder: Path, prefix: str):
    for p in folder.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), "lab-bucket", f"{prefix}/{p.relative_to(folder).as_posix()}")


def test_bdv_n5_cloud_from_local_s3(tmp_path, s3_server, monkeypatch):
    endpoint, client = s3_server
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    vol, mosaic = _truth()
    _write_bdv_n5(tmp_path / "dataset.n5", mosaic, 2)
    _upload(client, tmp_path / "dataset.n5", "projects/exm/dataset.n5")
    uri = "s3://lab-bucket/projects/exm/dataset.n5"
    xml = _xml(tmp_path / "cloud.xml", _n5_loader(uri, "bdv.n5.cloud"), mosaic, 2)
    tiles = Tileset.open(xml)
    assert isinstance(tiles[0].source, BdvN5Source) and tiles[0].source.path == uri
    for lvl in range(len(LEVELS)):
        src = BdvN5Source(tiles[0].source.n5, [0, 1], level=lvl)
        want = np.stack([_levels(mosaic.tiles[0][c])[lvl] for c in range(2)])
        np.testing.assert_array_equal(src.read((slice(None),) * 3), want)
    np.testing.assert_array_equal(tiles.fuse(blend="overwrite"), vol)


def test_multimg_zarr_with_s3bucket_from_local_s3(tmp_path, s3_server, monkeypatch):
    endpoint, client = s3_server
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    vol, mosaic = _truth()
    loader = _write_multimg_zarr(tmp_path / "SPIM.ome.zarr", mosaic, 2, "1.0")
    _upload(client, tmp_path / "SPIM.ome.zarr", "exaSPIM_1/SPIM.ome.zarr")
    # the AIND spelling: <s3bucket> turns <zarr> into a key of that bucket
    zarr_el = loader.find("zarr")
    zarr_el.set("type", "absolute")
    zarr_el.text = "exaSPIM_1/SPIM.ome.zarr"
    bucket = ET.Element("s3bucket")
    bucket.text = "lab-bucket"
    loader.insert(0, bucket)
    xml = _xml(tmp_path / "aind.xml", loader, mosaic, 2)
    tiles = Tileset.open(xml)
    assert str(tiles[1].source.path).startswith("s3://lab-bucket/exaSPIM_1/SPIM.ome.zarr/")
    for lvl in range(len(LEVELS)):
        views = tiles[1].source.views
        src = ZarrViewSource([v.location for v in views], None, lvl)
        want = np.stack([_levels(mosaic.tiles[1][c])[lvl] for c in range(2)])
        np.testing.assert_array_equal(src.read((slice(None),) * 3), want)
    np.testing.assert_array_equal(tiles.fuse(blend="overwrite"), vol)


# -- the shared source contract ------------------------------------------------------------------
class TestBdvN5SourceContract(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth()[1].tiles[1]

    @pytest.fixture
    def source(self, expected, tmp_path):
        mosaic = cut_tiles(expected, (1, 1), tile_shape=expected.shape[-2:])
        _write_bdv_n5(tmp_path / "c.n5", mosaic, 2)
        return BdvN5Source(tmp_path / "c.n5", [0, 1])


@pytest.mark.parametrize("version", ["3.0", "1.0"])
class TestZarrViewSourceContract(SourceTests):
    @pytest.fixture
    def expected(self):
        return _truth()[1].tiles[0]

    @pytest.fixture
    def source(self, expected, tmp_path, version):
        mosaic = cut_tiles(expected, (1, 1), tile_shape=expected.shape[-2:])
        loader = _write_multimg_zarr(tmp_path / "c.ome.zarr", mosaic, 2, version)
        xml = _xml(tmp_path / "c.xml", loader, mosaic, 2)
        return Tileset.open(xml)[0].source


# -- writing BigStitcher projects as N5 ---------------------------------------------------------
def test_to_bdv_n5_reads_back_through_tensorstore_and_our_reader(tmp_path):
    img = make_volume((4, 40, 560), seed=3, n_blobs=8)[0]  # values above int16's range
    assert img.max() > 32767
    vol = np.stack([img, img[:, ::-1, :]])
    mosaic = cut_tiles(vol, (1, 2), tile_shape=(40, 300))
    tiles = Tileset.from_arrays(mosaic.tiles, mosaic.offsets_px * VOXEL, VOXEL)
    n5, xml = tiles.to_bdv(tmp_path / "tiles.n5", format="n5")
    assert n5 == tmp_path / "tiles.n5" and not (tmp_path / "tiles.n5.partial").exists()
    if LINT.exists():
        res = subprocess.run([sys.executable, str(LINT), str(xml)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    checked_mean = False
    root = ET.parse(xml).getroot()
    loader = root.find("SequenceDescription/ImageLoader")
    assert (loader.get("format"), loader.findtext("n5")) == ("bdv.n5", "tiles.n5")
    # TensorStore, independently: bdv-core's layout, x-first dimensions, native uint16
    for tile in range(2):
        for c in range(2):
            setup = tile * 2 + c
            attrs = json.loads((n5 / f"setup{setup}" / "attributes.json").read_text())
            assert attrs["dataType"] == "uint16"
            factors = attrs["downsamplingFactors"]
            assert factors[0] == [1, 1, 1] and len(factors) >= 2
            for lvl, (fx, fy, fz) in enumerate(factors):
                arr = ts.open(
                    {
                        "driver": "n5",
                        "kvstore": {
                            "driver": "file",
                            "path": f"{n5}/setup{setup}/timepoint0/s{lvl}/",
                        },
                    }
                ).result()
                data = np.asarray(arr.read().result()).T  # (z, y, x)
                truth = mosaic.tiles[tile][c]
                f_zyx = (fz, fy, fx)
                want_shape = tuple(-(-n // f) for n, f in zip(truth.shape, f_zyx, strict=True))
                assert data.shape == want_shape and data.dtype == np.uint16
                if lvl == 0:
                    np.testing.assert_array_equal(data, truth)
                elif lvl == 1:  # block means of level 0, rounded half up
                    assert all(n % f == 0 for n, f in zip(truth.shape, f_zyx, strict=True))
                    pairs = zip(truth.shape, f_zyx, strict=True)
                    split = [v for n, f in pairs for v in (n // f, f)]
                    blocks = truth.reshape(split).astype(np.float64).mean(axis=(1, 3, 5))
                    np.testing.assert_array_equal(data, np.floor(blocks + 0.5).astype(np.uint16))
                    checked_mean = True
                # one chunk per file: every block of the grid is its own file
                block = arr.chunk_layout.read_chunk.shape
                n_chunks = np.prod([-(-n // b) for n, b in zip(arr.shape, block, strict=True)])
                files = [
                    p for p in (n5 / f"setup{setup}/timepoint0/s{lvl}").rglob("*")
                    if p.is_file() and p.name != "attributes.json"
                ]  # fmt: skip
                assert len(files) == n_chunks
    assert checked_mean
    back = Tileset.open(xml)
    np.testing.assert_allclose(back.offsets, tiles.offsets, atol=1e-9)
    np.testing.assert_array_equal(back.fuse(blend="overwrite"), vol)


@pytest.mark.parametrize("dtype", ["int8", "uint32", "int64", "float32", "float64"])
def test_to_bdv_n5_native_dtypes(tmp_path, dtype):
    data = (np.arange(3 * 20 * 24) % 120 - 60).reshape(3, 20, 24).astype(dtype)
    if np.dtype(dtype).kind == "u":
        data = data.astype(np.int64).clip(0).astype(dtype)
    tiles = Tileset.from_arrays([data], [(0.0, 0.0, 0.0)], VOXEL)
    n5, _ = tiles.to_bdv(tmp_path / "t.n5", format="n5")
    arr = ts.open(
        {"driver": "n5", "kvstore": {"driver": "file", "path": f"{n5}/setup0/timepoint0/s0/"}}
    )
    np.testing.assert_array_equal(np.asarray(arr.result().read().result()).T, data)
    assert BdvN5(n5).dtype(0) == np.dtype(dtype)


def test_export_bdv_cli_writes_n5(tmp_path):
    from tilefuse.cli import main

    _, mosaic = _truth()
    tiles = Tileset.from_arrays(mosaic.tiles, mosaic.offsets_px * VOXEL, VOXEL)
    _, xml = tiles.to_bdv(tmp_path / "in.h5")
    assert main(["export-bdv", str(xml), "-o", str(tmp_path / "out.n5"), "--no-progress"]) == 0
    back = Tileset.open(tmp_path / "out.xml")
    assert isinstance(back[0].source, BdvN5Source)
    np.testing.assert_array_equal(back[1].read(), mosaic.tiles[1])
    out = tmp_path / "out2.n5"
    assert main(["export-bdv", str(xml), "-o", str(out), "--output-format", "n5"]) == 0
    assert (out / "setup3" / "attributes.json").is_file()


def test_fused_export_to_n5_equals_the_truth(tmp_path):
    from tilefuse.cli import main

    vol, mosaic = _truth()
    tiles = Tileset.from_arrays(mosaic.tiles, mosaic.offsets_px * VOXEL, VOXEL)
    _, xml = tiles.to_bdv(tmp_path / "in.h5")
    out = tmp_path / "fused.n5"
    code = main(["export-bdv", str(xml), "--fused", "--blend", "overwrite", "-o", str(out)])
    assert code == 0
    for c in range(2):  # one setup per channel, read by TensorStore
        kv = {"driver": "file", "path": f"{out}/setup{c}/timepoint0/s0/"}
        arr = ts.open({"driver": "n5", "kvstore": kv}).result()
        np.testing.assert_array_equal(np.asarray(arr.read().result()).T, vol[c])
