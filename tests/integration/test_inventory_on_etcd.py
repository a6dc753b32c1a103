"""The inventory suite of tests/unit/desired/test_inventory.py again, on a real etcd (a
fresh prefix of the session's shared 1-member cluster, tests/etcdcluster.py): every test
there that takes `backend`, directly or through its fixtures; the unit layer runs them on
SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.desired import test_inventory
from tests.unit.storebackends import INTEGRATION_BACKENDS, backend_suite, open_backend

globals().update(backend_suite(test_inventory))


@pytest.fixture(params=INTEGRATION_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b
