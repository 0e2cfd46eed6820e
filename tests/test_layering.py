"""The fence of docs/architecture.md, over the whole import graph of the package.

Every module under ``mcastcam/`` is parsed; every ``import``/``from ... import`` (absolute or
relative, at module level or inside a function) is resolved to a module name. Then:

* ``mcastcam.protocol`` (the sans-IO core) imports only itself, the pure helpers
  (:data:`PURE_HELPERS`) and the standard library / pure third-party modules, never a shell;
* the pure helpers import nothing of mcastcam but each other;
* ``mcastcam.sender`` and ``mcastcam.receiver`` never import each other.

ruff's banned-api (``mcastcam/protocol/ruff.toml``) keeps I/O modules out of the core; this
test keeps the shells out of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mcastcam"
PURE_HELPERS = {"mcastcam.errors", "mcastcam.jpeg"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = importer.split(".")
        if not is_package:
            parts.pop()
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, node.module] if node.module else parts)
    # ``from pkg import mod`` may import a submodule: record both candidates.
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets.update(resolve(node, name, path.name == "__init__.py"))
        graph[name] = {t for t in targets if t == "mcastcam" or t.startswith("mcastcam.")}
    return graph


def known(graph: dict[str, set[str]], target: str) -> str | None:
    """The module ``target`` names (a submodule candidate that is not a module: None)."""
    while target:
        if target in graph:
            return target
        target = target.rpartition(".")[0]
    return None


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_is_complete() -> None:
    graph = import_graph()
    assert "mcastcam.protocol.codec" in graph
    assert "mcastcam.receiver.http" in graph
    # relative imports are resolved too
    node = ast.parse("from ..errors import DecodeError").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert resolve(node, "mcastcam.protocol.codec", False)[0] == "mcastcam.errors"


def test_protocol_imports_only_itself_and_pure_helpers() -> None:
    graph = import_graph()
    bad = {
        (mod, known(graph, t))
        for mod, targets in graph.items()
        if inside(mod, "mcastcam.protocol")
        for t in targets
        if (k := known(graph, t)) is not None
        and not inside(k, "mcastcam.protocol")
        and k not in PURE_HELPERS
    }
    assert not bad, f"the sans-IO core imports shell modules: {sorted(bad)}"


def test_pure_helpers_import_only_pure_helpers() -> None:
    graph = import_graph()
    for helper in PURE_HELPERS:
        deps = {known(graph, t) for t in graph[helper]} - {None}
        assert deps <= PURE_HELPERS, (helper, deps)


def test_sender_and_receiver_do_not_import_each_other() -> None:
    graph = import_graph()
    pairs = (("mcastcam.sender", "mcastcam.receiver"), ("mcastcam.receiver", "mcastcam.sender"))
    for a, b in pairs:
        bad = {
            (mod, t)
            for mod, targets in graph.items()
            if inside(mod, a)
            for t in targets
            if (k := known(graph, t)) is not None and inside(k, b)
        }
        assert not bad, bad
