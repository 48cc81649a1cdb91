"""The package's structure: imports run one way (see docs/architecture.md).

Counted from the source with `ast`, including imports inside functions (a lazy
import hides a cycle, it does not remove it); only ``if TYPE_CHECKING:`` blocks
are left out of the cycle check.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tilefuse"

#: the modules allowed to know `Tileset`: the façade itself and its front ends
TILESET_USERS = {"tilefuse", "tilefuse.tileset", "tilefuse.cli"}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(("tilefuse", *p.relative_to(SRC).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = p
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip |= {id(m) for b in n.body for m in ast.walk(b)}
    return skip


def _imports(path: Path, name: str) -> list[tuple[str, set[str], bool]]:
    """``(module, imported names, typing only)`` for every import statement in a file."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                out.append((a.name, set(), id(n) in skip))
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                base = ".".join(parts + ([n.module] if n.module else []))
            out.append((base, {a.name for a in n.names}, id(n) in skip))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        if name == "tilefuse":
            continue  # the package root re-exports everything; it is the top, not a layer
        targets: set[str] = set()
        for base, names, typing_only in _imports(path, name):
            if typing_only:
                continue
            targets |= {t for t in {base, *(f"{base}.{a}" for a in names)} if t in mods}
        graph[name] = targets - {name, "tilefuse"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_imports_inside_functions():
    graph = _graph()
    # tileset.py imports the fusion engine inside `Tileset.fuse` only
    assert "tilefuse.fuse" in graph["tilefuse.tileset"]
    assert "tilefuse.layout" in graph["tilefuse.tileset"]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (counting imports inside functions): " + " | ".join(
        ", ".join(c) for c in cycles
    )


@pytest.mark.parametrize("name", sorted(set(_modules()) - TILESET_USERS))
def test_only_the_facade_knows_tileset(name):
    """Modules below tileset.py take tiles and return results; none imports Tileset."""
    path = _modules()[name]
    bad = [
        base
        for base, names, _ in _imports(path, name)
        if base == "tilefuse.tileset"
        or (base == "tilefuse" and names & {"Tileset", "tileset"})
        or base.startswith("tilefuse.tileset.")
    ]
    assert not bad, f"{path.relative_to(SRC.parent)} imports Tileset (even if only for typing)"


def _raised_names(path: Path) -> list[tuple[int, str]]:
    """``(line, exception class name)`` of every ``raise Name(...)`` in a file."""
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Raise) and isinstance(n.exc, ast.Call):
            func = n.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            out.append((n.lineno, name))
    return out


def test_every_deliberate_error_is_a_tilefuse_error():
    """Bad input gets a `TilefuseError` subclass (which also subclasses the matching builtin)."""
    import tilefuse.errors as errors

    family = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.TilefuseError)
    }
    assert set(errors.__all__) == family
    builtin = {
        name
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    builtin -= {"NotImplementedError"}  # abstract methods are not errors about input
    bad = [
        f"{path.relative_to(SRC.parent)}:{line}: raise {name}(...)"
        for path in sorted(SRC.rglob("*.py"))
        for line, name in _raised_names(path)
        if name in builtin
    ]
    assert not bad, "raise a tilefuse.errors class (add one if needed):\n" + "\n".join(bad)


def test_error_family_keeps_the_builtins_callers_catch():
    from tilefuse import errors

    assert issubclass(errors.ParameterError, ValueError)
    assert issubclass(errors.ParameterTypeError, TypeError)
    assert issubclass(errors.NotFoundError, KeyError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    assert issubclass(errors.StateError, RuntimeError)
    # a KeyError subclass that reads like the others (KeyError would quote its message)
    assert str(errors.NotFoundError("no channel 'GFP'")) == "no channel 'GFP'"
