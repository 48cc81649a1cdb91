"""The CLI speaks CLI: every mistake ends in one stderr line, exit 2 (130 for Ctrl-C), no traceback,
and names the flag that fixes it."""

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tilefuse.cli import build_parser, main
from tilefuse.demo import write_demo
from tilefuse.tileset import Tileset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("demo"), shape=(6, 90, 100))


@pytest.fixture(scope="module")
def stitched(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("st") / "done.ome.zarr"
    assert main(["stitch", str(demo.folder), "-o", str(out), *VS,
                 "--no-progress", "--levels", "1"]) == 0  # fmt: skip
    return out


def _run(argv, capfd):
    for h in list(logging.getLogger().handlers):  # log to the captured stderr of this call
        logging.getLogger().removeHandler(h)
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


VS = ["--voxel-size", "0.4", "0.17", "0.17"]


def _boom(exc):
    def raiser(*a, **k):
        raise exc

    return raiser


# (id, argv builder, monkeypatches, exit code, substrings the one stderr line must hold)
CASES = [
    ("missing-input", lambda d, t, s: ["info", str(t / "nope")], {}, 2, ["not found"]),
    ("missing-output-flag", lambda d, t, s: ["stitch", str(d.folder)], {}, 2, ["-o/--output"]),
    (
        "bad-blend",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "o.zarr"), "--blend", "median"],
        {},
        2,
        ["--blend", "median"],
    ),
    (
        "voxel-size-needs-3",
        lambda d, t, s: ["info", str(d.folder), "--voxel-size", "1", "1"],
        {},
        2,
        ["--voxel-size"],
    ),
    (
        "ngff-version-flag",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "o.zarr"), "--version", "0.4"],
        {},
        2,
        ["--ngff-version"],
    ),
    (
        "typo-suggests-flag",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "o.zarr"), "--levles", "2"],
        {},
        2,
        ["--levels"],
    ),
    (
        "output-exists",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(s), *VS],
        {},
        2,
        ["--overwrite"],
    ),
    (
        "output-is-a-file",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(d.tileconfig), *VS],
        {},
        2,
        ["-o", "is a file"],
    ),
    (
        "output-parent-missing",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "typo" / "o.ome.zarr"), *VS],
        {},
        2,
        ["does not exist", "-o"],
    ),
    (
        "unknown-format-name",
        lambda d, t, s: ["info", str(d.folder), "--format", "czi"],
        {},
        2,
        ["--format", "czi"],
    ),
    ("wrong-format", lambda d, t, s: ["info", str(d.folder), "--format", "nd2"], {}, 2, []),
    (
        "channel-not-there",
        lambda d, t, s: ["info", str(d.folder), *VS, "--channels", "7"],
        {},
        2,
        ["7"],
    ),
    (
        "broken-tileconfig",
        lambda d, t, s: ["info", str(t / "bad")],
        {"bad_cfg": True},
        2,
        ["TileConfiguration.txt:2"],
    ),
    (
        "levels-zero",
        lambda d, t, s: [
            "stitch",
            str(d.folder),
            "-o",
            str(t / "l0.ome.zarr"),
            *VS,
            "--levels",
            "0",
            "--no-progress",
        ],
        {},
        2,
        ["level"],
    ),
    (
        "missing-corrections-file",
        lambda d, t, s: [
            "stitch",
            str(d.folder),
            "-o",
            str(t / "c.ome.zarr"),
            *VS,
            "--correct",
            str(t / "no.npz"),
        ],
        {},
        2,
        ["no.npz"],
    ),
    (
        "demo-size-unreadable",
        lambda d, t, s: ["demo", str(t / "dm"), "--size", "lots"],
        {},
        2,
        ["--size"],
    ),
    (
        "demo-size-too-small",
        lambda d, t, s: ["demo", str(t / "dm"), "--size", "10KB"],
        {},
        2,
        ["--size", "too small"],
    ),
    (
        "labels-exist",
        lambda d, t, s: [
            "dedup",
            str(d.folder / "labels"),
            "-o",
            str(s),
            *VS,
            "--name",
            "cells",
            "--no-progress",
        ],
        {"labels": True},
        2,
        ["--overwrite"],
    ),
    (
        "ctrl-c-stitch-resumes",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "k.ome.zarr"), *VS],
        {"fuse": KeyboardInterrupt()},
        130,
        ["interrupted", "rerun the same command to resume"],
    ),
    (
        "ctrl-c-info",
        lambda d, t, s: ["info", str(d.folder), *VS],
        {"summary": KeyboardInterrupt()},
        130,
        ["interrupted"],
    ),
    (
        "disk-full",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "f.ome.zarr"), *VS],
        {"fuse": OSError(errno.ENOSPC, "No space left on device", "f.ome.zarr/0/c/0/0/0")},
        2,
        ["No space left on device"],
    ),
    (
        "read-only-output",
        lambda d, t, s: ["stitch", str(d.folder), "-o", str(t / "r.ome.zarr"), *VS],
        {"fuse": PermissionError(errno.EROFS, "Read-only file system", "r.ome.zarr")},
        2,
        ["Read-only file system"],
    ),
    (
        "unexpected-bug",
        lambda d, t, s: ["info", str(d.folder), *VS],
        {"summary": IndexError("list index out of range")},
        2,
        ["IndexError", "-v"],
    ),
    (
        "api-words-become-flags",
        lambda d, t, s: ["info", str(d.folder), *VS],
        {
            "summary": ValueError(
                "views of one tile from different angles: pass angle= to pick one; "
                "pass world_unit_um=(z, y, x)"
            )
        },
        2,
        ["--angle", "--world-unit"],
    ),
]


@pytest.mark.parametrize(("argv", "patches", "code", "needles"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_cli_mistake(demo, stitched, tmp_path, capfd, monkeypatch, argv, patches, code, needles):
    if patches.get("bad_cfg"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "TileConfiguration.txt").write_text("dim = 3\nbroken line\n")
    if patches.get("labels"):
        assert main(["dedup", str(demo.folder / "labels"), "-o", str(stitched), *VS,
                     "--name", "cells", "--no-progress"]) in (0, 2)  # fmt: skip
    if "fuse" in patches:
        monkeypatch.setattr(Tileset, "fuse", _boom(patches["fuse"]))
    if "summary" in patches:
        monkeypatch.setattr(Tileset, "summary", _boom(patches["summary"]))
    got, _, err = _run(argv(demo, tmp_path, stitched), capfd)
    assert got == code, err
    # the error is one line; anything else on stderr is the run's own log (INFO ...)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("INFO ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    # library wording never leaks to the command line
    assert "overwrite=True" not in err
    assert "world_unit_um=" not in err


def test_at_least_twenty_mistakes():
    assert len(CASES) >= 20


def test_broken_pipe_is_one_line_exit_2(demo):
    r, w = os.pipe()
    os.close(r)  # like `tilefuse info ... | head` after head exits
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "tilefuse.cli", "info", str(demo.folder), *VS],
        stdout=w, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
    )  # fmt: skip
    os.close(w)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert [ln for ln in lines if not ln.startswith("INFO")] == [
        "tilefuse info: error: output closed early (broken pipe)"
    ]


def test_defaulted_voxel_size_warns_and_names_the_flag(demo, capfd):
    code, _, err = _run(["info", str(demo.folder)], capfd)
    assert code == 0
    assert "holds no voxel size" in err
    assert "--voxel-size" in err
    code, _, err = _run(["info", str(demo.folder), *VS], capfd)
    assert code == 0
    assert "voxel size" not in err


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert "default" in (action.help or "") or f"(default: {action.default}" in text, (
                    f"{name} {action.option_strings}: default {action.default!r} not shown"
                )


def test_stitch_names_the_image_after_the_input_and_sets_a_data_window(demo, tmp_path):
    import json

    import numpy as np

    out = tmp_path / "named.ome.zarr"
    assert main(["stitch", str(demo.folder), "-o", str(out), *VS, "--no-progress"]) == 0
    ome = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["multiscales"][0]["name"] == demo.folder.name
    (ch,) = ome["omero"]["channels"]
    assert ch["label"] == demo.folder.name
    lo, hi = np.percentile(demo.volume, [1, 99.9])
    # a window from the data (bounded sample), not the dtype's 0..65535
    assert ch["window"]["end"] < 65535
    assert abs(ch["window"]["start"] - lo) < 0.05 * (hi - lo)
    assert abs(ch["window"]["end"] - hi) < 0.05 * (hi - lo)


def test_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert f"`tilefuse {name}`" in readme, name


def test_blend_offers_centre():
    parser = build_parser()
    args = parser.parse_args(["stitch", "x", "-o", "y", "--blend", "centre"])
    assert args.blend == "centre"
    shutil.which("tilefuse")


def test_per_channel_display_windows(tmp_path):
    import json

    from tilefuse import MultiScaleGroup

    g = MultiScaleGroup.create(
        tmp_path / "mc.ome.zarr",
        shape=(2, 4, 8, 8),
        dtype="uint16",
        voxel_size=(1, 1, 1),
        origin=(0, 0, 0),
        channel_names=["DAPI", "GFP"],
    )
    g.set_attribute("window", [[100.0, 900.0], [5.0, 60.0]])
    ome = json.loads((tmp_path / "mc.ome.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    got = [(c["label"], c["window"]["start"], c["window"]["end"]) for c in ome["omero"]["channels"]]
    assert got == [("DAPI", 100.0, 900.0), ("GFP", 5.0, 60.0)]


def test_reader_option_refusal_names_flags(tmp_path, capfd, shared_data):
    code, _, err = _run(
        ["info", str(shared_data / "nd2" / "cluster.nd2"), "--voxel-size", "1", "1", "1"], capfd
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "takes no option --voxel-size" in line
    assert "--timepoint" in line
    assert "voxel_size" not in line


@pytest.mark.filterwarnings("default::RuntimeWarning")  # as on a real command line, not errors
def test_warnings_in_the_log_name_flags_too(tmp_path, capfd, shared_data):
    import re

    xml = (shared_data / "bdv-h5" / "pybdv_example.xml").read_text()
    for name in ("pybdv_example.h5", "example.h5"):
        shutil.copy(shared_data / "bdv-h5" / name, tmp_path / name)
    bad = re.sub(r"(<affine>\s*)(\S+)", r"\1Infinity", xml, count=1)
    (tmp_path / "inf.xml").write_text(bad)
    code, _, err = _run(["info", str(tmp_path / "inf.xml")], capfd)
    assert code == 2
    assert "Traceback" not in err
    assert "world_unit_um=" not in err
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1
    assert "finite" in errors[0]
    # every other line is a one-line log record, not a Python warning's source echo
    assert all(ln.startswith(("INFO ", "WARNING ")) for ln in err.splitlines() if ln not in errors)


def test_project_with_an_empty_sequence_is_a_typed_error(capfd, shared_data):
    xml = shared_data / "bigstitcher-xml" / "bigstitcher_3.xml"  # registrations, no setups
    code, _, err = _run(["info", str(xml)], capfd)
    assert code == 2
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1
    assert str(xml) in errors[0]
    assert "no timepoints" in errors[0]
    assert "IndexError" not in err
