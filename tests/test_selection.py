"""Timepoints, angles and channels: chosen in the API and the CLI for every format, listed by
``info``, and refused at open when the input does not have them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from tilefuse import Tileset
from tilefuse.cli import main
from tilefuse.errors import SelectionError


@pytest.fixture
def timelapse(shared_data):
    return shared_data / "nd2" / "example-timelapse.nd2"


def test_nd2_timelapse_stitch_at_timepoint_3_equals_the_api(timelapse, tmp_path, capsys):
    api = Tileset.open(timelapse, timepoint=3)
    assert api[0].metadata["timepoints"] == list(range(53))
    want = api.fuse()
    # the frame really is timepoint 3 of the file (nd2 itself, not our reader)
    import nd2

    with nd2.ND2File(timelapse) as f:
        frames = f.asarray()
    np.testing.assert_array_equal(want.reshape(frames.shape[1:]), frames[3])
    assert not np.array_equal(frames[3], frames[0])
    out = tmp_path / "t3.ome.zarr"
    code = main(["stitch", str(timelapse), "--timepoint", "3", "-o", str(out), "--no-progress"])
    assert code == 0
    got = zarr.open_group(str(out), mode="r")["0"][...]
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    capsys.readouterr()
    assert main(["info", str(timelapse), "--timepoint", "3"]) == 0
    text = capsys.readouterr().out
    assert "timepoints  53: 0, 1, 2" in text and "reading timepoint 3" in text
    assert main(["info", str(timelapse), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["timepoints"] == list(range(53)) and info["timepoint"] == 0


@pytest.mark.parametrize("tp", [53, -1])
def test_nd2_bad_timepoint_is_an_error_at_open(timelapse, tp):
    with pytest.raises(SelectionError, match=f"no timepoint {tp}: the file has 53"):
        Tileset.open(timelapse, timepoint=tp)
    assert main(["info", str(timelapse), "--timepoint", str(tp)]) != 0


def _ome_zarr_timelapse(path, n_t=3):
    data = (np.arange(n_t * 2 * 3 * 8 * 9) % 251).reshape(n_t, 2, 3, 8, 9).astype(np.uint8)
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    a = g.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 1, 3, 8, 9))
    a[...] = data
    axes = [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        *({"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"),
    ]
    scale = [1.0, 1.0, 1.0, 0.5, 0.5]
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]
    return data


def test_ome_zarr_timepoints_checked_at_open(tmp_path):
    data = _ome_zarr_timelapse(tmp_path / "img.zarr")
    ts = Tileset.open(tmp_path / "img.zarr", timepoint=2)
    np.testing.assert_array_equal(ts[0].read(), data[2])
    for bad in (3, -1):  # -1 must not silently read the last timepoint
        with pytest.raises(SelectionError, match=f"no timepoint {bad}: the image has 3"):
            Tileset.open(tmp_path / "img.zarr", timepoint=bad)
    # channels by index or name, from the CLI
    out = tmp_path / "c1.ome.zarr"
    args = ["stitch", str(tmp_path / "img.zarr"), "--timepoint", "1", "--channels", "1"]
    assert main([*args, "-o", str(out), "--no-progress"]) == 0
    got = zarr.open_group(str(out), mode="r")["0"][...]
    np.testing.assert_array_equal(got.reshape(data[1, 1].shape), data[1, 1])


def test_bigstitcher_timepoint_and_angle_checked_at_open(shared_data):
    xml = shared_data / "bigstitcher-xml" / "rhapso_drosophila_dataset.xml"
    ts = Tileset.open(xml, timepoint=30, angle=45)
    assert ts[0].metadata["timepoints"] == [18, 30] and ts[0].metadata["angle"] == 45
    with pytest.raises(
        SelectionError, match=r"no timepoint 7; the project has timepoints \[18, 30\]"
    ):
        Tileset.open(xml, timepoint=7, angle=45)
    with pytest.raises(SelectionError, match="no angle 3"):
        Tileset.open(xml, timepoint=18, angle=3)
    assert main(["info", str(xml), "--timepoint", "30", "--angle", "45"]) == 0
    # an option the input's reader does not take is refused, by name
    assert (
        main(
            ["info", str(xml), "--timepoint", "30", "--angle", "45", "--voxel-size", "1", "1", "1"]
        )
        != 0
    )
