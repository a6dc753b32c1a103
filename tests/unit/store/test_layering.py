"""The store sits at the bottom of the controller: it imports nothing of daolinet outside
controller.store (controller/store/__init__.py), so the desired state, the cluster
machinery and the API can all use it without a cycle."""

from __future__ import annotations

from pathlib import Path

import controller.store
from tests.unit.layering import daolinet_imports

STORE = Path(controller.store.__file__).parent


def test_store_imports_nothing_above_it() -> None:
    modules = sorted(STORE.rglob("*.py"))
    assert len(modules) > 5
    above = {
        f"{path.relative_to(STORE)}: {name}"
        for path in modules
        for name in daolinet_imports(path)
        if name != "controller.store" and not name.startswith("controller.store.")
    }
    assert above == set()
