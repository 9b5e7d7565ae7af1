"""The package's modules import one way: no group of modules imports itself back (directly or
through others), so any module can be read, tested and changed alone."""

import ast
import os

import tfcompress

PACKAGE = os.path.dirname(tfcompress.__file__)


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                found[rel.replace(os.sep, ".").removesuffix(".__init__")] = path
    return found


def _imported(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its code (inside functions too:
    they run when the function does); `from package import module` names the module."""
    here = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    targets = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            module = node.module or ""
            if node.level:
                module = f"{base}.{module}" if module else base
            targets |= {f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                        for a in node.names}
    edges = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that reach each other (strongly connected, more than one)."""
    reach = {v: set() for v in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            v = todo.pop()
            if v not in reach[start]:
                reach[start].add(v)
                todo.extend(graph[v])
    groups = []
    for v in graph:
        group = {v} | {w for w in reach[v] if v in reach[w]}
        if len(group) > 1 and group not in groups:
            groups.append(group)
    return groups


def test_the_package_has_no_import_circle():
    known = _modules()
    graph = {name: _imported(name, path, known) for name, path in known.items()}
    assert len(graph) > 40 and graph["tfcompress.pipeline._run"]  # the walk sees the package
    assert _circles(graph) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [{"a", "b", "c"}]


def test_file_primitives_import_nothing_of_tfcompress():
    known = _modules()
    assert _imported("tfcompress._io", known["tfcompress._io"], known) == set()
