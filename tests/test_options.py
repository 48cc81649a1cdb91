"""Options objects: each setting declared once, shared by fuse, fuse_labels, to_bdv and the CLI."""

import dataclasses
import inspect

import numpy as np
import pytest
import zarr

from tilefuse import ExecOptions, FusionOptions, OutputOptions, Tileset
from tilefuse.options import with_overrides
from tilefuse.synthetic import cut_tiles, make_volume

OBJECTS = {"options", "output_options", "exec_options"}


def _fields(*classes):
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _keywords(method):
    params = inspect.signature(method).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in params), "no **kwargs pass-through"
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY}


def test_facade_keywords_are_exactly_the_options_fields():
    assert _keywords(Tileset.fuse) == _fields(FusionOptions, OutputOptions, ExecOptions) | OBJECTS
    assert _keywords(Tileset.fuse_labels) == (
        _fields(OutputOptions, ExecOptions) | OBJECTS | {"mapping", "rule", "resample"}
    )
    # what to export (tiles or fused) and the container (HDF5 or N5) are not options fields
    assert _keywords(Tileset.to_bdv) <= _fields(FusionOptions, OutputOptions, ExecOptions) | (
        OBJECTS | {"fused", "format"}
    )


def _mosaic():
    vol, _ = make_volume((10, 90, 100), seed=3)
    m = cut_tiles(vol, (2, 2), overlap=0.3)
    # each tile brightened by its own constant, so max/mean differ in overlaps
    tiles = [t + np.uint16(7 * k) for k, t in enumerate(m.tiles)]
    return vol, m, Tileset.from_arrays(tiles, m.offsets_px)


def test_options_objects_and_keywords_give_the_same_result():
    vol, m, ts = _mosaic()
    want = np.zeros(vol.shape, dtype=np.uint16)
    for k, (t, o) in enumerate(zip(m.tiles, m.offsets_px.astype(int), strict=True)):
        sl = tuple(slice(a, a + n) for a, n in zip(o, t.shape, strict=True))
        want[sl] = np.maximum(want[sl], t + np.uint16(7 * k))
    by_objects = ts.fuse(
        options=FusionOptions(blend="max"),
        output_options=OutputOptions(chunks=(4, 32, 32)),
        exec_options=ExecOptions(workers=2),
    )
    by_keywords = ts.fuse(blend="max", chunks=(4, 32, 32), workers=2)
    np.testing.assert_array_equal(by_objects, want)
    np.testing.assert_array_equal(by_keywords, want)
    # a keyword overrides its field of the object; None keeps the object's value
    overridden = ts.fuse(options=FusionOptions(blend="mean"), blend="max", priority=None)
    np.testing.assert_array_equal(overridden, want)


def test_output_options_reach_the_store(tmp_path):
    _, _, ts = _mosaic()
    opts = OutputOptions(
        levels=2, chunks=(4, 16, 32), shards=False, version="0.4", compression="none", name="x"
    )
    g = ts.fuse(tmp_path / "f.ome.zarr", output_options=opts, exec_options=ExecOptions(workers=1))
    root = zarr.open_group(str(tmp_path / "f.ome.zarr"), mode="r")
    assert root.metadata.zarr_format == 2
    assert root.attrs["multiscales"][0]["name"] == "x"
    assert [d["path"] for d in root.attrs["multiscales"][0]["datasets"]] == ["0", "1"]
    assert root["0"].chunks == (4, 16, 32) and root["0"].compressors == ()
    np.testing.assert_array_equal(root["0"][...], ts.fuse())
    assert g.n_levels == 2


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="version"):
        OutputOptions(version="0.6")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compression"):
        OutputOptions(compression="lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="levels"):
        OutputOptions(levels=0)
    with pytest.raises(ValueError, match="chunks"):
        OutputOptions(chunks=(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        FusionOptions(priority="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blend must be one of"):
        FusionOptions(blend="nonsense")
    with pytest.raises(TypeError, match="no field"):
        with_overrides(None, ExecOptions, threads=3)
    with pytest.raises(TypeError, match="expected FusionOptions"):
        with_overrides(OutputOptions(), FusionOptions)
    _, _, ts = _mosaic()
    with pytest.raises(ValueError, match="blend must be one of"):
        ts.fuse(blend="nonsense")


def test_options_are_frozen_and_normalised():
    o = OutputOptions(chunks=[8, 8, 8], shards=None)  # type: ignore[arg-type]
    assert o.chunks == (8, 8, 8) and o.shards is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.levels = 3  # type: ignore[misc]
    assert FusionOptions(voxel_size=[1, 2, 3]).voxel_size == (1.0, 2.0, 3.0)  # type: ignore[arg-type]
