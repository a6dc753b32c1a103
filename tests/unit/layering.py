"""For the layering tests: which daolinet modules a source file imports."""

from __future__ import annotations

import ast
from pathlib import Path


def daolinet_imports(path: Path) -> set[str]:
    """The modules of daolinet (controller, hostnet) one source file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("controller", "hostnet")}
