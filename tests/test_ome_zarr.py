import json

import numpy as np
import ome_zarr_models
import pytest
import zarr

from tilefuse import MultiScaleGroup, Tileset
from tilefuse.errors import OutputExistsError, StoreError
from tilefuse.pyramid import downsample
from tilefuse.synthetic import cut_tiles, make_volume

MODES = [
    pytest.param({"version": "0.5", "shards": True}, id="0.5-sharded"),
    pytest.param({"version": "0.5", "shards": False}, id="0.5-unsharded"),
    pytest.param({"version": "0.4"}, id="0.4"),
]


def write_image_with_labels(path, mode, channels=1):
    img, lab = make_volume((18, 150, 170), seed=21, blob_radius=3)
    data = img if channels == 1 else np.stack([img, img // 3])
    g = MultiScaleGroup.create(
        path,
        shape=data.shape,
        dtype=data.dtype,
        voxel_size=(0.4, 0.17, 0.17),
        origin=(2.0, -1.0, 5.0),
        chunks=(8, 32, 32),
        name="sample",
        channel_names=["dapi", "gfp"] if channels == 2 else None,
        **mode,
    )
    for b in g.blocks():
        r = g.block_region(b)
        g.write_block(r, data[(slice(None),) * (data.ndim - 3) + r])
    g.build_pyramid(3)
    g.mark_complete()
    lab_g = g.create_labels("cells")
    for b in lab_g.blocks():
        r = lab_g.block_region(b)
        lab_g.write_block(r, lab[r] if channels == 1 else lab[r][None])
    lab_g.build_pyramid(g.n_levels)
    lab_g.mark_complete()
    return g, data, lab


@pytest.mark.parametrize("mode", MODES)
def test_store_validates_and_reads_back(tmp_path, mode):
    path = tmp_path / "img.ome.zarr"
    g, img, lab = write_image_with_labels(path, mode)
    # independent validator: ome-zarr-models
    image = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"))
    assert type(image).__name__ == "Image"
    labels = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path / "labels"), mode="r"))
    assert type(labels).__name__ == "Labels"
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(path / "labels" / "cells"), mode="r"))
    # plain zarr reads the same pixels
    z = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(z["0"][...], img)
    np.testing.assert_array_equal(z["labels/cells/0"][...], lab)
    # every level is the block-wise reduction of the previous one
    f1 = g.get_attribute("level_factors")[0]
    assert f1 == [1, 2, 2]  # z voxel 0.4 >= 2 * 0.17: z is not halved first
    np.testing.assert_array_equal(z["1"][...], downsample(img, f1, "mean"))
    np.testing.assert_array_equal(z["labels/cells/1"][...], downsample(lab, f1, "mode"))
    assert z["labels/cells/2"].dtype == np.uint32


def test_ngff_metadata_details(tmp_path):
    path = tmp_path / "img.ome.zarr"
    g, _, _ = write_image_with_labels(path, {"version": "0.5"})
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    ome = attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "micrometer" for a in ms["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    trans = [d["coordinateTransformations"][1]["translation"] for d in ms["datasets"]]
    np.testing.assert_allclose(scales[0], [0.4, 0.17, 0.17])
    np.testing.assert_allclose(scales[1], [0.4, 0.34, 0.34])
    np.testing.assert_allclose(scales[2], [0.8, 0.68, 0.68])
    # pixel-centre convention: t_i = t_0 + (f - 1) / 2 * v_0
    np.testing.assert_allclose(trans[0], [2.0, -1.0, 5.0])
    np.testing.assert_allclose(trans[2], [2.0 + 0.5 * 0.4, -1.0 + 1.5 * 0.17, 5.0 + 1.5 * 0.17])
    for lvl in range(3):
        arr = json.loads((path / str(lvl) / "zarr.json").read_text())
        assert arr["dimension_names"] == ["z", "y", "x"]
    assert (
        json.loads((path / "0" / "zarr.json").read_text())["codecs"][0]["name"]
        == "sharding_indexed"
    )
    labels_group = json.loads((path / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert labels_group == {"version": "0.5", "labels": ["cells"]}
    lab_attrs = json.loads((path / "labels" / "cells" / "zarr.json").read_text())["attributes"][
        "ome"
    ]
    assert lab_attrs["image-label"]["source"]["image"] == "../../"
    assert len(lab_attrs["multiscales"][0]["datasets"]) == 3
    assert g.labels == ["cells"] and g.open_labels("cells").kind == "label"
    assert "omero" in ome and ome["omero"]["channels"][0]["window"]["max"] == 65535


def test_multichannel_omero_and_ome_zarr_reader(tmp_path):
    from ome_zarr import reader as ome_reader
    from ome_zarr.io import parse_url

    path = tmp_path / "mc.ome.zarr"
    g, data, _ = write_image_with_labels(path, {"version": "0.5"}, channels=2)
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"))
    assert g.axis_names == ["c", "z", "y", "x"]
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["dapi", "gfp"]
    assert all(len(c["color"]) == 6 for c in attrs["omero"]["channels"])
    nodes = list(ome_reader.Reader(parse_url(str(path)))())
    levels = nodes[0].data
    assert [tuple(d.shape) for d in levels] == [tuple(a.shape) for a in g.levels]
    np.testing.assert_array_equal(np.asarray(levels[0]), data)


def test_ome_zarr_reader_v04(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = tmp_path / "v4.ome.zarr"
    _, data, _ = write_image_with_labels(path, {"version": "0.4"})
    assert (path / ".zattrs").exists() and (path / "0" / ".zarray").exists()
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    nodes = list(Reader(parse_url(str(path)))())
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), data)
    assert len(nodes[0].data) == 3


def test_create_refuses_existing_and_validates_input(tmp_path):
    p = tmp_path / "a.ome.zarr"
    MultiScaleGroup.create(p, shape=(2, 8, 8), dtype="uint8")
    with pytest.raises(OutputExistsError):
        MultiScaleGroup.create(p, shape=(2, 8, 8), dtype="uint8")
    MultiScaleGroup.create(p, shape=(2, 8, 8), dtype="uint8", overwrite=True)
    with pytest.raises(ValueError, match="integer dtype"):
        MultiScaleGroup.create(tmp_path / "l", shape=(2, 8, 8), dtype="float32", kind="label")
    with pytest.raises(ValueError, match="whole multiples"):
        MultiScaleGroup.create(
            tmp_path / "s", shape=(2, 8, 8), dtype="uint8", chunks=(2, 4, 4), shards=(2, 6, 6)
        )
    with pytest.raises(StoreError):
        MultiScaleGroup.open(tmp_path / "nothing")
    g = MultiScaleGroup.open(p)
    with pytest.raises(ValueError, match=r"needs data of shape \(2, 8, 8\)"):
        MultiScaleGroup.open(p, mode="r+").write_block(
            g.block_region((0, 0, 0)), np.zeros((2, 8, 9))
        )


def test_fuse_into_store_with_pyramid(tmp_path):
    vol, _ = make_volume((16, 130, 150), seed=22)
    m = cut_tiles(vol, (2, 3), overlap=0.2)
    ts = Tileset.from_arrays(m.tiles, m.offsets_px * [0.5, 0.2, 0.2], voxel_size=(0.5, 0.2, 0.2))
    g = ts.fuse(tmp_path / "f.ome.zarr", levels=3, chunks=(8, 32, 32))
    assert g.is_complete and g.n_levels == 3
    np.testing.assert_array_equal(g.read(), vol)
    np.testing.assert_array_equal(
        g.read(level=1), downsample(vol, g.get_attribute("level_factors")[0])
    )
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(tmp_path / "f.ome.zarr"), mode="r"))


def test_write_array_from_memmap_then_pyramid(tmp_path):
    img, _ = make_volume((20, 90, 100), seed=23)
    np.save(tmp_path / "a.npy", img)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    g = MultiScaleGroup.create(
        tmp_path / "a.ome.zarr", shape=mm.shape, dtype=mm.dtype, chunks=(8, 32, 32)
    )
    g.write_array(mm, workers=2)
    g.build_pyramid(3, workers=2)
    g.mark_complete()
    np.testing.assert_array_equal(g.read(), img)
    np.testing.assert_array_equal(g.read(level=1), downsample(img, (2, 2, 2)))
    with pytest.raises(ValueError, match="data shape"):
        g.write_array(img[:, :10])


# ome-zarr-py 0.18 warns about its own Scaler even when given scale_factors
@pytest.mark.filterwarnings("ignore:Call to deprecated class Scaler:DeprecationWarning")
def test_store_written_by_ome_zarr_py_takes_labels_in_its_own_chunking(tmp_path):
    """ome-zarr-py names levels s0, s1, halves only y and x, and chunks as asked."""
    from ome_zarr.writer import write_image

    img, truth = make_volume((16, 64, 72), seed=4, blob_radius=3, n_blobs=25)
    path = tmp_path / "ozp.ome.zarr"
    root = zarr.open_group(str(path), mode="w")
    write_image(img, root, axes="zyx", scale_factors=(2,), storage_options={"chunks": (8, 16, 16)})
    assert sorted(root.array_keys()) == ["s0", "s1"]

    image = MultiScaleGroup.open(path, mode="r+")
    assert image.n_levels == 2
    np.testing.assert_array_equal(image.read(), img)
    np.testing.assert_array_equal(image.read(level=1), root["s1"][:])
    assert image.step_factors(1) == [1, 2, 2]  # ome-zarr-py's, not tilefuse's default (2, 2, 2)
    assert image.block_shape() == (8, 16, 16)

    # label tiles cut from the ground truth, on the image's grid (voxel size 1, origin 0)
    m = cut_tiles(truth, (2, 2), overlap=0.25)
    tiles = Tileset.from_arrays(m.tiles, m.offsets_px.astype(float))
    labels = tiles.fuse_labels(path, name="cells")
    assert image.labels == ["cells"]
    assert labels.n_levels == image.n_levels == 2
    np.testing.assert_array_equal(labels.read(), truth)
    # the image's chunking, not 1x1x1; the image's pyramid factors
    assert tuple(labels[0].chunks) == tuple(root["s0"].chunks) == (8, 16, 16)
    assert labels[1].shape == root["s1"].shape == (16, 32, 36)
    assert labels.step_factors(1) == image.step_factors(1)
    # the labels' level 1 is the mode of 1x2x2 windows: its IDs are the image's level-0 IDs
    assert set(np.unique(labels.read(level=1))) <= set(np.unique(truth))
    # the user's image arrays are untouched
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["s0"][:], img)
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"))
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(path / "labels"), mode="r"))
    ome_zarr_models.open_ome_zarr(zarr.open_group(str(path / "labels" / "cells"), mode="r"))


def test_foreign_store_without_dataset_paths_is_refused(tmp_path):
    path = tmp_path / "bad.ome.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_array("s0", shape=(2, 4, 4), dtype="uint8")
    ms = {
        "axes": [{"name": a, "type": "space"} for a in "zyx"],
        "datasets": [{"coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
    }
    root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    with pytest.raises(StoreError, match="malformed 'multiscales'"):
        MultiScaleGroup.open(path)
    ms["datasets"][0]["path"] = "missing"
    root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    with pytest.raises(StoreError, match="'missing' is not a zarr array"):
        MultiScaleGroup.open(path)
