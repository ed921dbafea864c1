"""Test helper: reads a package's source (parsed, never imported) and lists what breaks each
architecture rule that tests/test_architecture.py enforces, so the rules can also be tried on a
small made-up package."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

Graph = Mapping[str, set[str]]  # a module (or package) -> the ones it imports


@dataclass(frozen=True)
class Module:
    """One .py file: its dotted name (`dupify.api.deps`; a package's __init__ is `dupify.api`)."""

    name: str
    path: Path = field(repr=False)
    tree: ast.Module = field(repr=False)
    is_package: bool = field(repr=False)


def read_package(root: Path) -> dict[str, Module]:
    """Every module below the package directory `root`, by dotted name."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = Module(name, path, tree, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node` that can run: all but the body of `if TYPE_CHECKING:` (imports
    for annotations only), so function-level imports count."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield statement
                yield from _runtime_nodes(statement)
            continue
        yield child
        yield from _runtime_nodes(child)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, with a relative import resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _known(name: str, modules: Mapping[str, Module]) -> str | None:
    """`name` if it is one of `modules`, else its nearest enclosing one (or None: not ours)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Each module -> the modules of the package it imports at run time. `from a import b` is an
    edge to the module `a.b` when there is one, else to `a`."""
    graph: dict[str, set[str]] = {}
    for name, module in modules.items():
        targets: set[str | None] = set()
        for node in _runtime_nodes(module.tree):
            if isinstance(node, ast.Import):
                targets.update(_known(alias.name, modules) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node)
                targets.update(_known(f"{base}.{alias.name}", modules) for alias in node.names)
        graph[name] = {target for target in targets if target is not None and target != name}
    return graph


def package_of(module: str) -> str:
    """The top-level package a module belongs to: `dupify.api.deps` -> `dupify.api`."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: Graph) -> dict[str, set[str]]:
    """The import graph between top-level packages (a top-level module is its own package)."""
    packages: dict[str, set[str]] = {}
    for source, targets in graph.items():
        mine = package_of(source)
        packages.setdefault(mine, set()).update(
            package_of(target) for target in targets if package_of(target) != mine
        )
    return packages


def _strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components of `graph`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(start: str, graph: Graph, group: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside `group` (a strongly connected component)."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph.get(node, ())):
            if target == start:
                path = [node]
                while (before := previous[path[-1]]) is not None:
                    path.append(before)
                return [*reversed(path), start]
            if target in group and target not in previous:
                previous[target] = node
                queue.append(target)
    raise ValueError(f"{start} is on no cycle")


def cycles(graph: Graph) -> list[str]:
    """One cycle per group of nodes that import each other, as `a -> b -> a`."""
    groups = [group for group in _strongly_connected(graph) if len(group) > 1]
    return sorted(" -> ".join(_shortest_cycle(min(group), graph, group)) for group in groups)


def crowded_top_level(root: Path, most: int) -> list[str]:
    """The modules directly in `root` (besides __init__.py) when there are more than `most`."""
    names = sorted(path.name for path in root.glob("*.py") if path.name != "__init__.py")
    return names if len(names) > most else []


def long_files(root: Path, suffixes: Iterable[str], most: int) -> list[str]:
    """`path: N lines` for every file below `root` with one of `suffixes` longer than `most`."""
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix in suffixes and path.is_file():
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > most:
                found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def _inside(name: str, layer: Iterable[str]) -> bool:
    return any(name == part or name.startswith(part + ".") for part in layer)


def imports_outside(
    modules: Mapping[str, Module], banned: set[str], layer: Iterable[str]
) -> list[str]:
    """`module:line imports X` for every import (TYPE_CHECKING ones too: they tie the types to
    the framework) of a top-level package in `banned` from a module outside `layer`."""
    found: list[str] = []
    for name, module in sorted(modules.items()):
        if _inside(name, layer):
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            found.extend(f"{name}:{node.lineno} imports {root}" for root in roots if root in banned)
    return found


def _is_request(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id.lower().endswith("request")
    return isinstance(node, ast.Attribute) and node.attr.lower().endswith("request")


def request_state_outside(modules: Mapping[str, Module], layer: Iterable[str]) -> list[str]:
    """`module:line` for every `<request>.state` (a name ending in `request`) outside `layer`."""
    return [
        f"{name}:{node.lineno}"
        for name, module in sorted(modules.items())
        if not _inside(name, layer)
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Attribute) and node.attr == "state" and _is_request(node.value)
    ]


def missing_docstrings(modules: Mapping[str, Module]) -> list[str]:
    """Every module that does not open with a docstring."""
    return sorted(name for name, module in modules.items() if not ast.get_docstring(module.tree))
