"""The package's imports go one way: no module imports, directly or through others, a
module that imports it back.

Every ``import`` counts, at module level and inside functions (a function-local import
is still a dependency, only a late one), except those under ``if TYPE_CHECKING:``,
which never run. The oracle is a strongly-connected-components search over the import
graph read from the source with :mod:`ast`; the package is not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "compressai_transtic"


def _module_names() -> Dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> List[ast.AST]:
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if _is_type_checking(node):
            todo.extend(node.orelse)  # the else branch runs
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _targets(module: str, path: Path, node: ast.AST, names: Dict[str, Path]) -> Set[str]:
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
        stem = ".".join(p for p in (base, node.module or "") if p)
        candidates = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
    out = set()
    for name in candidates:
        while name and name not in names:  # an attribute of a module: the module
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    if isinstance(node, ast.ImportFrom):  # "from .pkg import mod" imports mod, not (only) pkg
        submodules = {t for t in out if t != stem} if node.level or node.module else out
        out = submodules or out
    return out


def import_graph() -> Dict[str, Set[str]]:
    names = _module_names()
    graph = {}
    for module, path in names.items():
        graph[module] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            graph[module] |= _targets(module, path, node, names)
    return graph


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Groups of modules that import each other (Tarjan's strongly connected components)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles():
    assert import_cycles(import_graph()) == []


def collapsed(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The import graph between the package's parts: each subpackage (``tasks``,
    ``evaluation``, ...) and each top-level module as one node. ``__main__`` modules are
    left out: ``python -m`` runs them and nothing imports them."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    parts: Dict[str, Set[str]] = {}
    for module, targets in graph.items():
        if module.endswith(".__main__"):
            continue
        parts.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    for targets in list(parts.values()):
        for target in targets:
            parts.setdefault(target, set())
    return parts


def test_the_subpackages_import_one_way():
    # e.g. the tasks use the protocols and metrics, which the evaluator uses too: both
    # sit below them, not inside the evaluation subpackage
    assert import_cycles(collapsed(import_graph())) == []


def test_the_cycle_search_finds_a_cycle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    modules = {"p.a.x": {"p.b.y"}, "p.b.y": set(), "p.b.z": {"p.a"}, "p.a": set(), "p.a.__main__": {"p.b.y"}}
    assert import_cycles(collapsed(modules)) == [["p.a", "p.b"]]


def test_the_graph_sees_function_local_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "compressai_transtic.training.cli" in graph["compressai_transtic.cli"]  # inside _run_train
    assert "compressai_transtic.state_dicts" in graph["compressai_transtic.models.tic"]
    assert "compressai_transtic.models" in graph["compressai_transtic.checkpoint"]
    assert "compressai_transtic.models.transtic" not in graph["compressai_transtic.prompts"]  # type-only


def test_the_package_root_lists_every_public_submodule_for_attribute_access():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    lazy = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY_SUBMODULES" for t in node.targets)
    )
    public = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if not path.name.startswith("_")
        and ((path.is_file() and path.suffix == ".py") or (path / "__init__.py").is_file())
    }
    assert sorted(lazy) == sorted(public)
