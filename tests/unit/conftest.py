"""Fixtures and hooks of the unit tests.

* `tmp_path` (and `tmp_dir(name)`, for module fixtures) lie on tmpfs (/dev/shm) when
  there is one.  The SQLite store syncs every commit (synchronous=FULL, as in
  production); on a disk that other work shares, one fsync can take tens of
  milliseconds, and the unit layer would wait on the disk instead of testing logic.
  The same code runs on the same kind of files; only where they lie differs.  Without a
  writable /dev/shm they lie where pytest puts them.
* The directories go at the end of a session without failures; after a failure they
  stay (the path is printed) for a look.
* Garbage collection: once collection is done, what it built (modules, the fuzz
  schema) is collected once and frozen, and the youngest generation is collected
  after 50 000 allocations instead of 700.  The tests build many short-lived objects
  (an API app per test) on a large heap: the full collections that followed took ~2.5 s
  of the unit layer's run; now there are 13 instead of 19, over fewer objects.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@pytest.fixture(scope="session")
def tmp_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """`tmp_dir(name)`: a new, empty directory named after `name` (on tmpfs if any)."""
    if not (SHM.is_dir() and os.access(SHM, os.W_OK)):
        yield lambda name: tmp_path_factory.mktemp(name, numbered=True)
        return
    root = Path(tempfile.mkdtemp(prefix="daolinet-unit-", dir=SHM))

    def make(name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=root))

    yield make
    if request.session.testsfailed:
        print(f"\nunit test files kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_dir: Callable[[str], Path]) -> Path:
    """pytest's tmp_path (a new directory per test), on tmpfs: see the module docstring."""
    return tmp_dir(re.sub(r"\W", "_", request.node.name)[:30])
