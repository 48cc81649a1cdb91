"""Fault injection: every way a run can fail ends refused or correct, inputs untouched.

Each test injects one fault from issue 12 (an output over its input, two
writers, changed inputs on resume, truncated tiles, implausible sizes, a full
disk, hostile XML) and asserts: the run is refused with a typed error (or
produces the right result), the input bytes are unchanged, and no store is
marked complete unless it equals an uninterrupted run. The kill -9 cases are
in ``test_crash.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import CountingSource
from tilefuse import MultiScaleGroup, Tile, Tileset
from tilefuse.cli import main
from tilefuse.demo import write_demo
from tilefuse.errors import (
    CorruptFileError,
    IncompleteStoreError,
    OutputOverlapError,
    OutputTooLargeError,
    StoreLockedError,
    TilefuseError,
    WriteError,
)
from tilefuse.geometry import affine_from_offset
from tilefuse.io.outputs import StoreLock

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tree_hash(path: Path) -> str:
    """Hash of every file's relative path and bytes under ``path`` (or of one file)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def demo(tmp_path):
    return write_demo(tmp_path / "demo", grid=(2, 2), shape=(8, 96, 96))


def run_cli(*args, env=None, timeout=120):
    """Run the CLI in a fresh process; return (rc, stderr lines)."""
    p = subprocess.run(
        [sys.executable, "-m", "tilefuse.cli", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return p.returncode, [ln for ln in p.stderr.splitlines() if ln.strip()]


# -- 1. output over input ------------------------------------------------------------------
def test_output_equal_inside_or_containing_an_input_is_refused(demo, tmp_path):
    store = tmp_path / "a.ome.zarr"
    Tileset.open(demo.folder).fuse(store, levels=2)
    before, tiles_before = tree_hash(store), tree_hash(demo.folder)
    ts = Tileset.open(store)
    for out, overwrite in (
        (store, True),  # the reported bug: deleted the input, wrote zeros, exit 0
        (store, False),
        (store / "inner.ome.zarr", True),  # inside the input store
        (tmp_path, True),  # containing it
    ):
        with pytest.raises(OutputOverlapError, match="input"):
            ts.fuse(out, overwrite=overwrite)
    tiles = Tileset.open(demo.folder)
    with pytest.raises(OutputOverlapError, match="contains"):
        tiles.fuse(demo.folder, overwrite=True)
    with pytest.raises(OutputOverlapError):
        tiles.to_bdv(demo.folder / tiles[0].name, overwrite=True)
    # the CLI: one line, exit 2, with and without --overwrite
    for extra in ([], ["--overwrite"]):
        assert main(["stitch", str(store), "-o", str(store), "--no-progress", *extra]) == 2
    assert tree_hash(store) == before and tree_hash(demo.folder) == tiles_before
    assert MultiScaleGroup.open(store).is_complete


def test_overwrite_replaces_only_a_finished_output(demo, tmp_path):
    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    ts.fuse(out)
    before = tree_hash(out)
    # a run with --overwrite that fails while reading leaves the old output as it was
    bad = Tileset(
        [Tile(CountingSource(t.source.read(_all(t)), fail_after=4), t.affine) for t in ts]
    )
    opts = {"chunks": (8, 16, 16), "shards": (8, 32, 32), "workers": 1}
    with pytest.raises(RuntimeError, match="simulated crash"):
        bad.fuse(out, overwrite=True, **opts)
    assert tree_hash(out) == before
    assert MultiScaleGroup.open(out).is_complete
    # the replacement is built beside and resumed by the next --overwrite run
    staged = tmp_path / "o.ome.zarr.tilefuse-new"
    assert not MultiScaleGroup.open(staged).is_complete
    good = Tileset([Tile(CountingSource(t.source.read(_all(t))), t.affine) for t in ts])
    g = good.fuse(out, overwrite=True, levels=2, **opts)
    assert g.is_complete and g.n_levels == 2 and not staged.exists()
    np.testing.assert_array_equal(g.read(), ts.fuse())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "o.ome.zarr"]


def _all(t):
    return tuple(slice(0, n) for n in t.shape)


# -- 2. two writers --------------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder(demo, tmp_path):
    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    with StoreLock(out):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            ts.fuse(out)
        assert not out.exists()
        assert main(["stitch", str(demo.folder), "-o", str(out), "--no-progress"]) == 2
    ts.fuse(out)  # released: the next writer goes ahead
    assert MultiScaleGroup.open(out).is_complete
    assert not list(tmp_path.glob("*.tilefuse-lock"))


def test_lock_of_a_killed_writer_is_taken_over(demo, tmp_path):
    out = tmp_path / "o.ome.zarr"
    code = f"""
        import os, sys
        sys.path.insert(0, {SRC!r})
        from tilefuse.io.outputs import StoreLock
        StoreLock({str(out)!r}).acquire()
        os.kill(os.getpid(), 9)
    """
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False)
    assert p.returncode == -9
    lock = tmp_path / "o.ome.zarr.tilefuse-lock"
    assert lock.exists()  # left behind by the dead writer
    Tileset.open(demo.folder).fuse(out)
    assert MultiScaleGroup.open(out).is_complete and not lock.exists()


def test_two_processes_one_store(demo, tmp_path):
    """Two real processes race for one output: one writes it, the other is refused."""
    out = tmp_path / "o.ome.zarr"
    args = [sys.executable, "-m", "tilefuse.cli", "stitch", str(demo.folder), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [
        subprocess.Popen([*args, "--no-progress"], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0
    # the loser is refused: by the lock, or (when it came after) because the output exists
    assert codes[1] == 2
    loser = next(err for rc, err in results if rc == 2)
    assert "being written by pid" in loser or "output exists" in loser
    g = MultiScaleGroup.open(out)
    assert g.is_complete
    expect = Tileset.open(demo.folder).fuse(levels=1)
    np.testing.assert_array_equal(g.read(), expect)


# -- 5. incomplete stores as input ---------------------------------------------------------
def test_incomplete_store_is_refused_as_input(tmp_path, caplog):
    vol = np.arange(8 * 64 * 64, dtype=np.uint16).reshape(8, 64, 64)
    src = CountingSource(vol, fail_after=3)
    ts = Tileset([Tile(src, affine_from_offset((1, 1, 1), (0, 0, 0)), name="t")])
    out = tmp_path / "half.ome.zarr"
    with pytest.raises(RuntimeError):
        ts.fuse(out, chunks=(8, 16, 16), shards=(8, 16, 16), workers=1)
    with pytest.raises(IncompleteStoreError, match="unfinished"):
        Tileset.open(out)
    assert main(["stitch", str(out), "-o", str(tmp_path / "b.ome.zarr"), "--no-progress"]) == 2
    assert not (tmp_path / "b.ome.zarr").exists()
    with caplog.at_level("WARNING"):
        half = Tileset.open(out, allow_incomplete=True)
    assert "unfinished" in caplog.text and len(half) == 1
    with pytest.raises(IncompleteStoreError):
        MultiScaleGroup.open(out).to_bdv(tmp_path / "x.h5")


# -- 6. truncated tiles ----------------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiles_are_an_error_naming_the_file(demo, tmp_path, compression):
    if compression:
        for f in sorted(demo.folder.glob("*.tif")):
            tifffile.imwrite(f, tifffile.imread(f), compression=compression)
    files = sorted(demo.folder.glob("tile*.tif"))
    for f in files:  # the reported case: every tile cut in half
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"tile.*\.tif.*truncated"):
        Tileset.open(demo.folder)
    out = tmp_path / "o.ome.zarr"
    assert main(["stitch", str(demo.folder), "-o", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_tiff_header_promising_more_than_the_file_holds(tmp_path):
    big = tmp_path / "big.tif"
    arr = tifffile.memmap(big, shape=(40000, 40000), dtype=np.uint16)  # sparse, 3.2 GB
    del arr
    with big.open("r+b") as f:
        f.truncate(1 << 20)
    with pytest.raises(CorruptFileError, match=r"big\.tif.*header places image data"):
        Tileset.from_tiff([big], offsets=[(0, 0, 0)], voxel_size=(1, 1, 1))


def test_unreadable_tile_fails_before_any_output_exists(tmp_path):
    vol = np.ones((4, 32, 32), dtype=np.uint16)
    ok = Tile(CountingSource(vol), affine_from_offset((1, 1, 1), (0, 0, 0)), name="ok")
    # the second tile fails on its second read: the probe of its last voxel
    bad = Tile(CountingSource(vol, fail_after=1), affine_from_offset((1, 1, 1), (0, 0, 20)))
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(CorruptFileError, match=r"cannot be read at voxel \(3, 31, 31\)"):
        Tileset([ok, bad]).fuse(out)
    assert not out.exists() and not list(tmp_path.iterdir())


# -- 7. size bounds ---------------------------------------------------------------------------
def test_implausible_output_size_is_refused_before_writing(tmp_path):
    vol = np.ones((4, 16, 16), dtype=np.uint16)
    far = Tileset.from_arrays([vol, vol], offsets=[(0, 0, 0), (0, 0, 1e9)], voxel_size=(1, 1, 1))
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(OutputTooLargeError, match="allow_large_output"):
        far.fuse(out)
    with pytest.raises(OutputTooLargeError):
        far.fuse()
    assert not out.exists()
    # a moderately sparse layout (here 200x) is written when allowed, and is right
    sparse = Tileset.from_arrays(
        [vol, vol * 2], offsets=[(0, 0, 0), (0, 0, 200 * 32 - 16)], voxel_size=(1, 1, 1)
    )
    with pytest.raises(OutputTooLargeError):
        sparse.fuse(out)
    g = sparse.fuse(out, allow_large_output=True, blend="overwrite")
    data = g.read()
    assert data.shape == (4, 16, 200 * 32) and data[:, :, :16].min() == 1
    assert data[:, :, -16:].min() == 2 and not data[:, :, 16:-16].any()


# -- 9. BDV export: a full disk, no leftovers --------------------------------------------------
DISK_FULL = """
import resource, signal, sys
sys.path.insert(0, {src!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from tilefuse.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("fused", [False, True])
def test_bdv_export_into_a_full_disk_is_an_error(demo, tmp_path, fused):
    out = tmp_path / "out" / "x.h5"
    out.parent.mkdir()
    argv = ["export-bdv", str(demo.folder), "-o", str(out), "--no-progress"]
    argv += ["--fused"] if fused else []
    code = DISK_FULL.format(src=SRC, limit=60_000, argv=argv)
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert p.returncode == 2, p.stderr  # not a segfault (-11)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and "failed" in lines[0] and "x.h5" in lines[0], lines
    assert sorted(q.name for q in out.parent.iterdir()) == []
    # enough space: the same command completes
    assert main(argv) == 0
    assert sorted(q.name for q in out.parent.iterdir()) == ["x.h5", "x.xml"]


def test_fused_store_into_a_full_disk_is_a_resumable_error(demo, tmp_path):
    out = tmp_path / "o.ome.zarr"
    argv = ["stitch", str(demo.folder), "-o", str(out), "--no-progress", "--compression", "none"]
    code = DISK_FULL.format(src=SRC, limit=40_000, argv=argv)
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert p.returncode == 2 and len(lines) == 1 and "resumable" in lines[0], p.stderr
    assert not MultiScaleGroup.open(out).is_complete
    assert main(argv) == 0  # space again: the rerun finishes it
    g = MultiScaleGroup.open(out)
    assert g.is_complete
    np.testing.assert_array_equal(g.read(), Tileset.open(demo.folder).fuse())


# -- 10. no DOCTYPE / entities in XML we write ---------------------------------------------------
def test_written_xml_carries_no_doctype_or_entities(shared_data, tmp_path):
    from tilefuse.io.spimdata import read_spimdata
    from tilefuse.io.spimdata_write import write_spimdata

    for name in ("pybdv_example.h5", "example.h5"):
        shutil.copy(shared_data / "bdv-h5" / name, tmp_path / name)
    xml = (shared_data / "bdv-h5" / "pybdv_example.xml").read_text()
    head, body = xml.split("<SpimData", 1)
    hostile = (
        f'{head}<!DOCTYPE SpimData [ <!ENTITY secret SYSTEM "file:///etc/hostname"> '
        f'<!ENTITY greet "hello"> ]>\n<SpimData{body}'
    )
    hostile = hostile.replace("</SpimData>", "<Note>&greet; &secret; kept text</Note></SpimData>")
    src = tmp_path / "p.xml"
    src.write_text(hostile)
    before = tree_hash(src)
    out = write_spimdata(read_spimdata(src), tmp_path / "q.xml")
    text = out.read_text()
    assert "<!DOCTYPE" not in text and "<!ENTITY" not in text and "&" not in text
    assert "kept text" in text and "/etc/hostname" not in text
    ts = Tileset.open(out)  # still a valid project
    assert len(ts) == 1 and tree_hash(src) == before


def test_every_new_error_is_a_tilefuse_error():
    for cls in (
        CorruptFileError,
        IncompleteStoreError,
        OutputOverlapError,
        OutputTooLargeError,
        StoreLockedError,
        WriteError,
    ):
        assert issubclass(cls, TilefuseError)


def test_ctrl_c_during_bdv_export_leaves_nothing_half_written(tmp_path):
    import signal
    import time

    demo = write_demo(tmp_path / "demo", grid=(2, 2), shape=(32, 300, 300))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "tilefuse.cli", "export-bdv", str(demo.folder)]
    cmd += ["-o", str(out / "x.h5"), "--fused", "--no-progress"]
    p = subprocess.Popen(
        cmd, env={**os.environ, "PYTHONPATH": SRC}, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "x.h5.partial").exists() and p.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=60)
    err = [ln for ln in p.stderr.read().splitlines() if ln.strip() and "WARNING" not in ln]
    p.stderr.close()
    left = sorted(q.name for q in out.iterdir())
    if rc == 130:  # interrupted (not finished before the signal arrived)
        assert len(err) == 1 and "interrupted" in err[0], err
        # nothing remains: no .partial, no lock, no half file
        assert left == [], left
    else:
        assert rc == 0 and left == ["x.h5", "x.xml"], (rc, left, err)
    assert (
        main(
            [
                "export-bdv",
                str(demo.folder),
                "-o",
                str(out / "x.h5"),
                "--fused",
                "--no-progress",
                "--overwrite",
            ]
        )
        == 0
    )
    assert sorted(q.name for q in out.iterdir()) == ["x.h5", "x.xml"]


# -- 3, 4, 8. resume: what changed, levels, the start-up window ------------------------------
def _interrupted(ts, out, monkeypatch, depth=1, **opts):
    """Fuse until the 3rd block read fails (after the probe); the store stays unfinished.

    ``depth``: sources per tile whose ``read`` is counted (a channel subset wraps one).
    """
    from tilefuse.source import Source

    calls, read = [0], Source.read

    def dying(self, region):
        calls[0] += 1
        if calls[0] > depth * (2 * len(ts) + 3):
            raise RuntimeError("simulated crash")
        return read(self, region)

    monkeypatch.setattr(Source, "read", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ts.fuse(out, workers=1, **opts)
    monkeypatch.setattr(Source, "read", read)
    assert not MultiScaleGroup.open(out).is_complete


SMALL = {"chunks": (8, 16, 16), "shards": (8, 32, 32)}


def test_resume_refuses_changed_inputs_or_settings(demo, tmp_path, monkeypatch):
    from tilefuse.errors import ResumeMismatchError

    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    _interrupted(ts, out, monkeypatch, **SMALL)
    for change, what in (
        ({"compression": "fast"}, "output compression"),
        ({"version": "0.4", "shards": False}, "output version"),
        ({"chunks": (8, 32, 32)}, "output chunks"),
        ({"blend": "max"}, "blend settings"),
    ):
        with pytest.raises(ResumeMismatchError, match=what):
            ts.fuse(out, **{**SMALL, **change})
    # a tile file replaced between the runs (the reported bug: old blocks kept)
    tile = sorted(demo.folder.glob("tile*.tif"))[0]
    tifffile.imwrite(tile, tifffile.imread(tile)[::-1].copy())
    with pytest.raises(ResumeMismatchError, match="tile files"):
        Tileset.open(demo.folder).fuse(out, **SMALL)
    assert main(["stitch", str(demo.folder), "-o", str(out), "--no-progress"]) == 2
    # --overwrite replaces it, and the result is the fresh run's
    g = Tileset.open(demo.folder).fuse(out, overwrite=True, **SMALL)
    np.testing.assert_array_equal(g.read(), Tileset.open(demo.folder).fuse())


def test_channel_selection_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    from tilefuse.errors import ResumeMismatchError

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 999, (2, 8, 48, 48), dtype=np.uint16) for _ in range(2)]
    ts = Tileset.from_arrays(arrays, offsets=[(0, 0, 0), (0, 0, 40)], voxel_size=(1, 1, 1))
    out = tmp_path / "c.ome.zarr"
    _interrupted(ts.select_channels([0]), out, monkeypatch, depth=2, **SMALL)
    with pytest.raises(ResumeMismatchError, match="tile files and channels"):
        ts.select_channels([1]).fuse(out, **SMALL)
    g = ts.select_channels([0]).fuse(out, **SMALL)  # the same selection resumes
    np.testing.assert_array_equal(g.read(), ts.select_channels([0]).fuse())


def test_levels_listed_only_when_complete_and_never_fewer_on_resume(demo, tmp_path, monkeypatch):
    from tilefuse.errors import ResumeMismatchError

    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    _interrupted(ts, out, monkeypatch, levels=3, **SMALL)
    g = MultiScaleGroup.open(out)
    assert g.n_levels == 1  # level 0 listed (unfinished), no downsampled level yet
    with pytest.raises(ResumeMismatchError, match="3 levels"):
        ts.fuse(out, levels=2, **SMALL)
    g = ts.fuse(out, levels=4, **SMALL)  # more levels extend the resumed store
    ref = ts.fuse(tmp_path / "ref.ome.zarr", levels=4, **SMALL)
    assert g.is_complete and g.n_levels == 4
    for i in range(4):
        np.testing.assert_array_equal(g.read(level=i), ref.read(level=i))


def test_a_kill_while_the_store_is_created_does_not_block_the_rerun(demo, tmp_path, monkeypatch):
    out = tmp_path / "o.ome.zarr"
    ts = Tileset.open(demo.folder)
    # a run killed inside store creation leaves only its half-made folder beside the output
    (tmp_path / "o.ome.zarr.tilefuse-init-4242").mkdir()
    (tmp_path / "o.ome.zarr.tilefuse-init-4242" / "zarr.json").write_text("{}")
    # a run killed just after creation (before any block): the identical rerun resumes it
    _interrupted(ts, out, monkeypatch, **SMALL)
    g = ts.fuse(out, **SMALL)
    assert g.is_complete
    np.testing.assert_array_equal(g.read(), ts.fuse())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "o.ome.zarr"]
