"""For the layering tests: which modules a source file imports."""

from __future__ import annotations

import ast
from pathlib import Path


def imports(path: Path, *, names: bool = False) -> set[str]:
    """Every module one source file imports absolutely; with `names`, also `a.b.c` for
    `from a.b import c` (since `c` may be a module: `from controller import api`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if names:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def daolinet_imports(path: Path) -> set[str]:
    """The modules of daolinet (controller, hostnet) one source file imports."""
    return {n for n in imports(path) if n.split(".")[0] in ("controller", "hostnet")}
