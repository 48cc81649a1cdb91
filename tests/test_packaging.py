"""The package declares what it imports, and builds with the backend it names."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs):
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _imported_top_modules():
    mods = set()
    for py in (ROOT / "src" / "tilefuse").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    # tilefuse._optional.require("matplotlib...", ...) imports by name
    for py in (ROOT / "src" / "tilefuse").rglob("*.py"):
        mods |= set(re.findall(r'require\(\s*"([a-zA-Z_]\w*)', py.read_text()))
    return mods - set(sys.stdlib_module_names) - {"tilefuse"}


def test_every_imported_package_is_declared():
    project = PYPROJECT["project"]
    required = _names(project["dependencies"])
    extras = {n for reqs in project["optional-dependencies"].values() for n in _names(reqs)}
    dists = packages_distributions()
    missing = []
    for mod in sorted(_imported_top_modules()):
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        if not names & (required | extras):
            missing.append(f"{mod} (distribution {sorted(names)})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_matplotlib_and_pooch_are_declared_extras_and_test_dependencies():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "matplotlib" in _names(extras["plot"])
    assert "pooch" in _names(extras["data"])
    assert {"matplotlib", "pooch"} <= _names(extras["test"])


def test_floors_match_what_the_code_needs():
    deps = {re.split(r"[<>=]", d)[0]: d for d in PYPROJECT["project"]["dependencies"]}
    # zarr 3 requires numpy 2: a lower floor would promise an install that cannot resolve
    assert deps["numpy"].startswith("numpy>=2")
    assert "nd2" in deps  # a design-card format: required, not an extra
    backend = PYPROJECT["build-system"]["requires"][0]
    # hatchling < 1.26 rejects the PEP 639 `license-files = [...]` list form (checked by hand
    # with 1.18, 1.24.2, 1.25.0: "Field `project.license-files` must be a table")
    assert isinstance(PYPROJECT["project"]["license-files"], list)
    assert backend == "hatchling>=1.26"


def test_python_classifiers_follow_requires_python():
    project = PYPROJECT["project"]
    floor = re.match(r">=3\.(\d+)", project["requires-python"]).group(1)
    minors = sorted(
        int(c.rsplit(".", 1)[1])
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert minors
    assert minors[0] == int(floor)
    assert project["urls"]


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    from tilefuse._optional import require

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'tilefuse\[plot\]'"):
        require("matplotlib", "plot", "show_slice")
