"""Generate docs/api.md from the docstrings of tilefuse's public API.

Run ``python docs/gen_api.py`` to write docs/api.md, or with ``--check`` to
exit 1 when it is out of date (the test suite does).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import tilefuse

MODULES = [
    "tilefuse",
    "tilefuse.io.registry",
    "tilefuse.io.tiff",
    "tilefuse.io.tileconfig",
    "tilefuse.io.mist",
    "tilefuse.io.positions",
    "tilefuse.io.jp2",
    "tilefuse.io.h5",
    "tilefuse.io.nd2",
    "tilefuse.io.ome_zarr",
    "tilefuse.io.ome_zarr_tiles",
    "tilefuse.io.spimdata",
    "tilefuse.io.spimdata_write",
    "tilefuse.io.bdv",
    "tilefuse.io.bdv_read",
    "tilefuse.io.bdv_stores",
    "tilefuse.io.project",
    "tilefuse.options",
    "tilefuse.fuse",
    "tilefuse.blend",
    "tilefuse.writers",
    "tilefuse.labels",
    "tilefuse.merge",
    "tilefuse.objects",
    "tilefuse.segment",
    "tilefuse.register",
    "tilefuse.intensity",
    "tilefuse.correction",
    "tilefuse.shading",
    "tilefuse.equalise",
    "tilefuse.surfaces",
    "tilefuse.pyramid",
    "tilefuse.geometry",
    "tilefuse.layout",
    "tilefuse.source",
    "tilefuse.testing",
    "tilefuse.data",
]
OUT = Path(__file__).with_name("api.md")


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def render() -> str:
    """The Markdown reference of every public class and function."""
    import importlib

    lines = [
        f"# API reference (tilefuse {tilefuse.__version__})",
        "",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit.",
        "",
    ]
    for name in MODULES:
        mod = importlib.import_module(name)
        lines += [f"## `{name}`", "", _doc(mod).split("\n\n")[0], ""]
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if name != "tilefuse" and getattr(obj, "__module__", name) != name:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            lines += [f"### `{attr}{_signature(obj)}`", "", "```text", _doc(obj), "```", ""]
            if inspect.isclass(obj):
                for mname, member in sorted(vars(obj).items()):
                    if mname.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, (classmethod, property))
                    ):
                        continue
                    target = member.__func__ if isinstance(member, classmethod) else member
                    sig = "" if isinstance(member, property) else _signature(target)
                    fn = target.fget if isinstance(member, property) else target
                    doc = _doc(fn).split("\n\n")[0].replace("\n", " ")
                    lines += [f"- `{attr}.{mname}{sig}`: {doc}"]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
