"""Both store backends for tests: a SQLite file, or a fresh prefix on the session's
shared 1-member etcd cluster (tests/etcdcluster.py).

The suites that hold for both backends (tests/unit/store/test_store.py,
desired/test_inventory.py, desired/test_inventory_policy.py) take a `backend` fixture.
The unit layer runs them on SQLite only (UNIT_BACKENDS: no process besides pytest); an
integration module runs the same tests again on a real etcd (backend_suite):

    @pytest.fixture(params=UNIT_BACKENDS)  # tests/integration: INTEGRATION_BACKENDS
    def backend(request, tmp_path):
        with open_backend(request, tmp_path) as b:
            yield b

`backend.open()` opens one more store object on the same data - for SQLite another
connection to the file, for etcd another client of the prefix: two objects are two
controller replicas (or a controller and its restart).  Every object opened is closed
at the end.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
from _pytest.fixtures import FixtureFunctionDefinition

from controller.store.base import Documents, Store
from controller.store.etcd.store import EtcdStore
from controller.store.sqlite import SqliteStore
from tests.etcdcluster import EtcdCluster, shared_cluster, unique_prefix

UNIT_BACKENDS = ("sqlite",)  # tests/unit
INTEGRATION_BACKENDS = ("etcd",)  # tests/integration: the same suites again


class WrappedStore:
    """A store that hands every call to `inner`: tests subclass it to watch or break
    writes (override `put` and `delete`) and keep the rest of the interface."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.inner.get(kind, key)

    def list(self, kind: str) -> list[dict[str, Any]]:
        return self.inner.list(kind)

    def items(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return self.inner.items(kind)

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        self.inner.put(kind, key, value, create=create)

    def delete(self, kind: str, key: str) -> bool:
        return self.inner.delete(kind, key)

    def snapshot(self) -> tuple[int, Documents]:
        return self.inner.snapshot()

    def revision(self) -> int:
        return self.inner.revision()

    def exclusive(self, timeout: float = 5.0) -> AbstractContextManager[None]:
        return self.inner.exclusive(timeout)

    def transaction(self) -> AbstractContextManager[None]:
        return self.inner.transaction()

    def watch(self, after: int, callback: Callable[..., None], on_error: Any = None) -> None:
        self.inner.watch(after, callback, on_error)


class Backend:
    def __init__(self, kind: str, path: Path, cluster: EtcdCluster | None) -> None:
        self.kind = kind
        self.path = path
        self.cluster = cluster
        self.prefix = unique_prefix()
        self.url = cluster.url(self.prefix) if cluster is not None else f"sqlite:///{path}"
        self._opened: list[Store] = []

    def open(self, **options: Any) -> Store:
        store: Store
        if self.kind == "sqlite":
            store = SqliteStore(self.path)
        else:
            assert self.cluster is not None
            options.setdefault("tls", self.cluster.client_tls)
            store = EtcdStore.from_url(self.url, **options)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            with contextlib.suppress(Exception):
                store.close()

    def __repr__(self) -> str:
        return f"Backend({self.url})"


@contextlib.contextmanager
def open_backend(request: Any, tmp_path: Path, kind: str | None = None) -> Iterator[Backend]:
    """The backend of a parametrized fixture (request.param), or `kind`."""
    kind = kind or request.param
    cluster = shared_cluster(request.config) if kind == "etcd" else None
    backend = Backend(kind, tmp_path / "db" / "daolinet.db", cluster)
    try:
        yield backend
    finally:
        backend.close()


def etcd_raw(cluster: EtcdCluster, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One request to etcd's JSON gateway (its first member), bypassing the store (to
    play another client: delete a key, revoke a lease, write a multi-key
    transaction), with the cluster's client certificate when it runs TLS."""
    tls = cluster.client_tls
    url = f"{'https' if tls else 'http'}://{cluster.endpoints[0]}/v3{path}"
    if tls is None:
        resp = requests.post(url, json=payload, timeout=5)
    else:
        resp = requests.post(url, json=payload, timeout=5, verify=str(tls.ca),
                             cert=(str(tls.cert), str(tls.key)))
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def backend_suite(module: ModuleType) -> dict[str, Any]:
    """The tests of `module` that run on a store backend (they ask for its `backend`
    fixture, directly or through the module's other fixtures), with every fixture of the
    module but `backend`: for an integration module to run them again on another backend.

        from tests.unit.store import test_store
        globals().update(backend_suite(test_store))

        @pytest.fixture(params=INTEGRATION_BACKENDS)
        def backend(request, tmp_path): ...
    """
    fixtures = {
        obj.name: obj for obj in vars(module).values() if isinstance(obj, FixtureFunctionDefinition)
    }
    needs: dict[str, bool] = {}

    def on_backend(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "backend":
            return True
        if name not in fixtures or name in seen:
            return False
        if name not in needs:
            args = inspect.signature(fixtures[name]).parameters
            needs[name] = any(on_backend(arg, seen | {name}) for arg in args)
        return needs[name]

    suite: dict[str, Any] = {
        attr: obj
        for attr, obj in vars(module).items()
        if isinstance(obj, FixtureFunctionDefinition) and obj.name != "backend"
    }
    for attr, obj in vars(module).items():
        if (
            attr.startswith("test_")
            and inspect.isfunction(obj)
            and any(on_backend(arg) for arg in inspect.signature(obj).parameters)
        ):
            suite[attr] = obj
    if not any(attr.startswith("test_") for attr in suite):
        raise RuntimeError(f"{module.__name__} has no test on a store backend")
    return suite
