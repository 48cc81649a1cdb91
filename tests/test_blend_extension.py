"""A new blend mode is one small class plus a registration; fuse and the CLI accept it."""

import numpy as np
import pytest
import tifffile
import zarr

from tilefuse import Tileset
from tilefuse.blend import Blend, blend_names, get_blend, register_blend, unregister_blend
from tilefuse.cli import main
from tilefuse.io.tileconfig import write_tileconfig
from tilefuse.synthetic import cut_tiles, make_volume


class Minimum(Blend):
    """Voxel-wise minimum of the covering tiles."""

    name = "test-min"

    def combine(self, parts, ctx):
        out = np.full((ctx.n_channels, *ctx.shape), np.inf)
        covered = np.zeros(ctx.shape, dtype=bool)
        for p in parts:
            view = out[(slice(None), *p.sub)]
            lower = np.minimum(view, p.data)
            view[...] = lower if p.mask is None else np.where(p.mask, lower, view)
            covered[p.sub] |= True if p.mask is None else p.mask
        out[:, ~covered] = 0
        return ctx.cast(out)


@pytest.fixture
def minimum():
    mode = register_blend(Minimum())
    yield mode
    unregister_blend(mode.name)


def _tiles():
    vol, _ = make_volume((8, 70, 90), seed=11)
    m = cut_tiles(vol, (2, 2), overlap=0.3)
    tiles = [t + np.uint16(5 * (4 - k)) for k, t in enumerate(m.tiles)]  # distinct per tile
    offsets = m.offsets_px.astype(int)
    want = np.full(vol.shape, np.iinfo(np.uint16).max, dtype=np.uint16)
    for t, o in zip(tiles, offsets, strict=True):
        sl = tuple(slice(a, a + n) for a, n in zip(o, t.shape, strict=True))
        want[sl] = np.minimum(want[sl], t)
    return tiles, offsets, want


def test_registered_mode_fuses_through_tileset(minimum):
    assert "test-min" in blend_names() and get_blend("test-min") is minimum
    tiles, offsets, want = _tiles()
    ts = Tileset.from_arrays(tiles, offsets)
    np.testing.assert_array_equal(ts.fuse(blend="test-min", chunks=(8, 32, 32)), want)
    # not label-safe: refused for labels
    with pytest.raises(ValueError, match="labels must be fused"):
        Tileset.from_arrays([t.astype(np.uint32) for t in tiles], offsets).fuse_labels(
            rule="test-min"
        )


def test_registered_mode_through_the_cli(minimum, tmp_path):
    tiles, offsets, want = _tiles()
    names = []
    for k, t in enumerate(tiles):
        tifffile.imwrite(tmp_path / f"t{k}.tif", t)
        names.append(f"t{k}.tif")
    cfg = write_tileconfig(tmp_path / "TileConfiguration.txt", names, offsets)
    out = tmp_path / "min.ome.zarr"
    argv = ["stitch", str(cfg), "-o", str(out), "--blend", "test-min", "--levels", "1"]
    assert main([*argv, "--no-progress", "--workers", "1"]) == 0
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][...], want)


def test_names_are_unique_unless_replaced(minimum):
    with pytest.raises(ValueError, match="already registered"):
        register_blend(Minimum())
    assert register_blend(Minimum(), replace=True).name == "test-min"
    with pytest.raises(ValueError, match="Blend instance"):
        register_blend(object())  # type: ignore[arg-type]
