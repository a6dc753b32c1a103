"""The store sits at the bottom of the controller: it imports nothing of daolinet outside
controller.store (controller/store/__init__.py), so the desired state, the cluster
machinery and the API can all use it without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import controller.store

STORE = Path(controller.store.__file__).parent


def _daolinet_imports(path: Path) -> set[str]:
    """The modules of daolinet (controller, hostnet) one source file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("controller", "hostnet")}


def test_store_imports_nothing_above_it() -> None:
    modules = sorted(STORE.rglob("*.py"))
    assert len(modules) > 5
    above = {
        f"{path.relative_to(STORE)}: {name}"
        for path in modules
        for name in _daolinet_imports(path)
        if name != "controller.store" and not name.startswith("controller.store.")
    }
    assert above == set()
