"""The import graph of twins_tasks: one direction, no circle, argparse only in the CLI (issue "One direction").

Every import counts, the ones inside functions too (a lazy import hides a circle, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "twins_tasks"

# The layers of README's "Code map", bottom first: a module imports only modules of its own layer or below.
LAYERS: dict[str, int] = {
    **dict.fromkeys(("twins_tasks", "constants", "errors", "types"), 0),
    **dict.fromkeys(
        (
            "files",
            "progress",
            "toolrun",
            "layout",
            "labels",
            "checks",
            "versions",
            "baseline",
            "store",
            "history",
            "migrations",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "sample",
            "preprocess",
            "export",
            "backends",
            "inference",
            "perf",
            "postprocess",
            "reference",
            "cache",
            "devices",
            "sharding",
        ),
        2,
    ),
    **dict.fromkeys(
        ("recipe", "steps", "results", "report", "regression", "run", "results_views", "retention", "notification"), 3
    ),
    "cli": 4,
}


def _module_name(path: Path) -> str:
    parts = ["twins_tasks", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The twins_tasks modules ``name`` imports (anywhere in the file), resolved to module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import sub`: a submodule
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else parts[0]]


def test_every_module_has_a_layer():
    assert [name for name in MODULES if (name.split(".") + [""])[1] not in LAYERS and name != "twins_tasks"] == []


def test_no_import_circle():
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name):
    upward = sorted(m for m in GRAPH[name] if _layer(m) > _layer(name))
    assert upward == [], f"{name} (layer {_layer(name)}) imports higher layers: {upward}"


# Not argument parsing: timm checkpoints pickle their training args (an argparse.Namespace), so loading one with
# torch.load(weights_only=True) must allow-list that class.
ARGPARSE_FOR_UNPICKLING = {"twins_tasks.export"}


def test_argparse_only_in_the_cli():
    users = sorted(
        name
        for name, path in MODULES.items()
        if not name.startswith("twins_tasks.cli")
        and any(
            (isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module == "argparse")
            for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert users == sorted(ARGPARSE_FOR_UNPICKLING)


def test_the_checker_sees_a_circle(tmp_path, monkeypatch):
    """The circle test can fail: two modules importing each other are found."""
    monkeypatch.setitem(GRAPH, "twins_tasks.constants", {"twins_tasks.errors"})
    monkeypatch.setitem(GRAPH, "twins_tasks.errors", {"twins_tasks.constants"})
    with pytest.raises(AssertionError):
        test_no_import_circle()
