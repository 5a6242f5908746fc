"""The package's layers: dependencies point one way, and there is no import cycle.

Every import is read from the source (deferred imports inside functions and
`TYPE_CHECKING` blocks included), so a cycle cannot hide behind a late import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aiecs_checkpoint"

LAYERS = [
    ("_version", "errors", "config"),
    ("domain", "stores"),
    ("engine",),
    ("tracking",),
    ("saver",),
    ("cli", "__main__"),
]
"""Lowest first: a module may import only from its own layer or below."""

BACKENDS = ("memory", "redis", "clickhouse")
"""Store backends: none imports another (the archive wraps a hot store through
`stores.protocols`), and the shared store modules import none of them."""


def module_names() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["aiecs_checkpoint", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def imports_of(name: str) -> set[str]:
    """Package modules `name` imports, anywhere in its source."""
    tree = ast.parse(MODULES[name].read_text())
    is_package = MODULES[name].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            found.update(subs)
            if not all(sub in MODULES for sub in subs):
                found.add(base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package root re-exports the public API
    for i, members in enumerate(LAYERS):
        if parts[1] in members:
            return i
    raise AssertionError(f"{name} belongs to no layer; add it to LAYERS")


def backend_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "stores" and parts[2] in BACKENDS:
        return parts[2]
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_from_its_layer_or_below(name: str) -> None:
    upward = sorted(m for m in GRAPH[name] if layer_of(m) > layer_of(name))
    assert not upward, f"{name} imports from a layer above it: {upward}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if ".stores" in m))
def test_a_store_module_imports_no_other_backend(name: str) -> None:
    mine = backend_of(name)
    foreign = sorted(m for m in GRAPH[name] if backend_of(m) not in (None, mine))
    assert not foreign, f"{name} imports another backend: {foreign}"


def test_the_package_has_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(MODULES):
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_the_walk_sees_deferred_imports() -> None:
    """The checks above would pass vacuously if the walk missed imports."""
    assert "aiecs_checkpoint.engine" in GRAPH["aiecs_checkpoint.saver.saver"]
    assert "aiecs_checkpoint.stores.ops" in GRAPH["aiecs_checkpoint.stores.protocols"]
    assert len(GRAPH) > 40
