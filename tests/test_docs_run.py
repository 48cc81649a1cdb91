"""Every code block in README.md and docs/ runs, in order, on generated data.

Rules (so new pages stay runnable without touching this file):

- Every fenced block names its language. ``python`` blocks run, page by page in one namespace,
  in order; ``bash`` blocks run each ``tilefuse ...`` command line through the CLI (exit 0
  required). Other languages (``text``, ``json``, ...) are shown output, not run.
- In bash, ``pip install ...`` and ``python -m pytest`` segments of a line are the install and
  the test suite itself (CI runs them: ``.ci/run``); any other non-tilefuse command makes the
  block fail unless it is marked.
- A block that cannot run here (network, a cluster, minutes of benchmark) is marked by an HTML
  comment on the line just above its fence: ``<!-- docs: no-run (reason) -->``.

Each page runs in a fresh folder holding generated data: ``tiles/`` (a 3 x 3 demo mosaic of
TIFF tiles with its ``TileConfiguration.txt``, pixels of 0.4 x 0.17 x 0.17 um) and
``tiles/labels/`` (per-tile label images of the same mosaic), ``dataset.xml`` + ``dataset.h5``
(those tiles as a BigStitcher project) and ``dataset-registered.xml`` (the same project, as
BigStitcher would hand it back).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"api.md"}  # written by docs/gen_api.py from docstrings; its blocks are text
NO_RUN = re.compile(r"<!--\s*docs:\s*no-run\b.*-->")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
SKIPPED_SEGMENTS = (re.compile(r"^pip install\b"), re.compile(r"^python -m pytest\b"))


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if p.name not in GENERATED]


def _blocks(page: Path) -> list[tuple[str, str, int, bool]]:
    """(language, code, line number, marked no-run) for every fenced block of a page."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        out.append((m.group(1).strip(), m.group(2), line, bool(NO_RUN.search(before))))
    return out


def _run_bash(code: str, where: str) -> None:
    from tilefuse.cli import main

    for raw in code.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for segment in (s.strip() for s in line.split("&&")):
            if any(p.match(segment) for p in SKIPPED_SEGMENTS):
                continue
            argv = shlex.split(segment)
            assert argv[0] == "tilefuse", (
                f"{where}: '{segment}' is not a tilefuse command: mark the block "
                "<!-- docs: no-run (reason) --> or make it one"
            )
            assert main(argv[1:]) == 0, f"{where}: '{segment}' failed"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generated data every page runs on (written once, copied per page)."""
    from tilefuse import Tileset
    from tilefuse.demo import write_demo

    root = tmp_path_factory.mktemp("docs-data")
    write_demo(root / "tiles", shape=(40, 200, 200))
    ts = Tileset.from_tileconfig(
        root / "tiles" / "TileConfiguration.txt", voxel_size=(0.4, 0.17, 0.17)
    )
    ts.to_bdv(root / "dataset.h5")
    shutil.copyfile(root / "dataset.xml", root / "dataset-registered.xml")
    return root


def _runnable(page: Path) -> bool:
    return any(lang in ("python", "bash") and not no_run for lang, _, _, no_run in _blocks(page))


@pytest.mark.parametrize(
    "page", [p for p in _pages() if _runnable(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_code_runs(page, generated, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(generated, work)
    monkeypatch.chdir(work)
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__main__"}
    for lang, code, line, no_run in _blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if no_run or lang not in ("python", "bash"):
            continue
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            _run_bash(code, where)


def test_every_block_names_its_language():
    unnamed = [
        f"{page.relative_to(ROOT)}:{line}"
        for page in _pages()
        for lang, _, line, _ in _blocks(page)
        if not lang
    ]
    assert not unnamed, f"code blocks without a language (use text for output): {unnamed}"


EXM_NAMES = [
    "blend",
    "blend2",
    "deduplicate_blob_ids",
    "find_overlapping_blobs",
    "get_all_blobs",
    "apply_new_ids",
    "get_offsets",
    "get_offsets_nd2",
    "get_tiles_overlaps",
    "overlapping",
    "get_top_surface",
    "get_bottom_surface",
    "get_contact_surface",
    "make_stitched_h5",
    "make_stitched_dedup_h5",
    "init_from_bdv",
    "init_from_h5",
    "init_from_jp2",
    "init_from_nd2",
    "preview_nd2",
    "init_from_tiff_files",
    "load_all",
    "load_tile",
    "get_slice",
    "update_offsets",
    "dedup_segmentation_ids",
    "find_intensity_scale",
    "scale_intensity",
    "scale_offset",
    "get_centroids",
    "local_to_global",
    "produce_output_volume",
    "create_blank_h5bdv",
    "Tile.apply_mask",
    "Tile.from_jp2",
    "Tile.from_nd2",
]


def test_migration_page_maps_every_exm_call_to_tilefuse_names_that_exist():
    import importlib

    from tilefuse import Tileset
    from tilefuse.labels import LabelMapping

    page = (ROOT / "docs" / "guide" / "from-exm.md").read_text()
    rows = [ln for ln in page.splitlines() if ln.startswith("| `")]
    first_cells = [ln.split("|")[1] for ln in rows]
    for name in EXM_NAMES:
        assert any(f"`{name}(" in c for c in first_cells), f"exm's {name} has no row"
    for row in rows:
        tilefuse_cell = re.sub(r'"[^"]*"', '""', row.rsplit("|", 2)[-2])  # drop file names
        for obj, attr in re.findall(r"\b(ts|labels|Tileset|mapping)\.(\w+)", tilefuse_cell):
            owner = LabelMapping if obj == "mapping" else Tileset
            fields = getattr(owner, "__dataclass_fields__", {})
            assert hasattr(owner, attr) or attr in fields, f"{obj}.{attr} in: {row}"
        for dotted in re.findall(r"`(tilefuse(?:\.\w+)+)", tilefuse_cell):
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ImportError:
                    continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)  # AttributeError names what the page got wrong
