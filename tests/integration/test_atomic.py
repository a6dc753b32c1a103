"""Atomic changes on a real etcd (a fresh prefix of the session's shared 1-member
cluster, tests/etcdcluster.py): the transaction suite of tests/unit/store/test_transaction.py
and the inventory suite of tests/unit/desired/test_atomic.py again (the unit layer runs
them on SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.desired import test_atomic
from tests.unit.store import test_transaction
from tests.unit.storebackends import INTEGRATION_BACKENDS, backend_suite, open_backend

globals().update(backend_suite(test_transaction))
globals().update(backend_suite(test_atomic))


@pytest.fixture(params=INTEGRATION_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b
