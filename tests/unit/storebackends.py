"""Both store backends for tests: a SQLite file, or a fresh prefix on the session's
shared 1-member etcd cluster (tests/etcdcluster.py).

    @pytest.fixture(params=BACKENDS)
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from controller.store import SqliteStore, Store
from controller.store_etcd import EtcdStore
from tests.etcdcluster import EtcdCluster, shared_cluster, unique_prefix

BACKENDS = ("sqlite", "etcd")


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


def etcd_raw(endpoint: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One request to etcd's JSON gateway, bypassing the store (to play another
    client: delete a key, revoke a lease, write a multi-key transaction)."""
    resp = requests.post(f"http://{endpoint}/v3{path}", json=payload, timeout=5)
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body
