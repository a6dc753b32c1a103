"""GET /api/v1/replicas: every replica's record and the leader, on any replica.  Two
replicas on one etcd: tests/integration/test_api_replicas_on_etcd.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cluster.leases import REPLICAS, Lease, replica_record
from controller.cluster.masters import REACH
from controller.desired.inventory import Inventory
from controller.store.base import Store, StoreUnavailable
from controller.store.sqlite import SqliteStore
from tests.unit.api.support import FakeRuntime

ADMIN, READONLY = "admin-token", "readonly-token"

C0 = replica_record("c0", "http://198.18.0.1:8080", "tcp:198.18.0.1:6653", site="a",
                    openflow_remote="tcp:100.64.0.1:6653")
C1 = replica_record("c1", "http://198.18.0.2:8080", "tcp:198.18.0.2:6653")


def context(store: Store, *, replicated: bool, replica: dict[str, Any] | None) -> ApiContext:
    return ApiContext(
        inventory=Inventory(store, lambda change: None, replicated=replicated), token=ADMIN,
        runtime=FakeRuntime(),
        openflow_host="0.0.0.0", openflow_port=6653, readonly_token=READONLY,
        replica=replica,
    )


def get(ctx: ApiContext, elector: Lease | None = None, token: str = READONLY) -> Any:
    if elector is not None:
        ctx.leadership = elector
    with TestClient(create_app(ctx)) as client:
        return client.get("/api/v1/replicas", headers={"Authorization": f"Bearer {token}"})


def test_the_standalone_controller_answers_itself_as_the_leader(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    elector = Lease(store, C0, standalone=True)
    elector.start()
    ctx = context(store, replicated=False, replica=C0)
    try:
        r = get(ctx, elector)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "leader": "c0", "generation": elector.generation, "assignment_generation": None,
            "replicas": [{"name": "c0", "api": "http://198.18.0.1:8080",
                          "openflow": "tcp:198.18.0.1:6653",
                          "openflow_remote": "tcp:100.64.0.1:6653", "site": "a",
                          "leader": True, "member": True, "switches": []}],
        }
        assert elector.generation >= 1
        assert store.list(REPLICAS) == []  # nothing written for it
        # a bare app (no record, no elector): nothing to show, no error
        bare = get(context(store, replicated=False, replica=None))
        assert bare.json() == {"leader": None, "generation": None,
                               "assignment_generation": None, "replicas": []}
    finally:
        elector.stop()
        store.close()


def test_a_token_is_needed_and_reading_is_enough(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    ctx = context(store, replicated=False, replica=C1)
    try:
        assert get(ctx, token=ADMIN).status_code == 200
        assert get(ctx, token=READONLY).json()["replicas"][0]["openflow_remote"] == \
            "tcp:198.18.0.2:6653"  # no remote target: the same as openflow
        r = get(ctx, token="wrong")
        assert (r.status_code, r.json()) == (401, {"detail": "invalid token"})
        with TestClient(create_app(ctx)) as client:
            assert client.get("/api/v1/replicas").status_code == 401
            assert client.post("/api/v1/replicas", headers={
                "Authorization": f"Bearer {ADMIN}"}).status_code == 405
    finally:
        store.close()


def test_replicated_store_unavailable_is_503(tmp_path: Path) -> None:
    class Down(SqliteStore):
        def list(self, kind: str) -> list[dict[str, Any]]:
            raise StoreUnavailable("etcd: no quorum (connection refused on A, B, C)")

    store = Down(tmp_path / "db")
    try:
        r = get(context(store, replicated=True, replica=C0))
        assert r.status_code == 503
        assert r.json() == {
            "detail": "store unavailable: etcd: no quorum (connection refused on A, B, C)"}
    finally:
        store.close()


def delete(ctx: ApiContext, name: str, token: str = ADMIN) -> Any:
    with TestClient(create_app(ctx)) as client:
        return client.delete(f"/api/v1/replicas/{name}",
                             headers={"Authorization": f"Bearer {token}"})


# Loopback only: port 9 refuses (a stopped replica); the test server's own URL answers.
STOPPED = replica_record("gone", "http://127.0.0.1:9", "tcp:127.0.0.1:6653")


def test_removing_a_stopped_replica(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")  # standing in for etcd (replicated=True)
    try:
        store.put(REPLICAS, "gone", STOPPED)
        store.put(REACH, "gone", {"replica": "gone", "switches": [1]})
        store.put(REPLICAS, "lead", replica_record("lead", "http://127.0.0.1:9",
                                                   "tcp:127.0.0.1:6654"))
        ctx = context(store, replicated=True, replica=C0)
        for token, code in ((READONLY, 403), ("wrong", 401)):
            assert delete(ctx, "gone", token).status_code == code
        assert store.get(REPLICAS, "gone") is not None
        r = delete(ctx, "nobody")
        assert (r.status_code, r.json()) == (404, {"detail": "no replica nobody"})
        lease = store.try_lead(store.get(REPLICAS, "lead") or {}, ttl=60)
        assert lease is not None
        r = delete(ctx, "lead")
        assert r.status_code == 409 and "leads" in r.json()["detail"], r.text
        r = delete(ctx, "gone")
        assert r.status_code == 204, r.text
        assert store.get(REPLICAS, "gone") is None and store.get(REACH, "gone") is None
        assert [x["name"] for x in get(ctx).json()["replicas"]] == ["lead"]
        lease.resign()
    finally:
        store.close()


def test_a_running_replica_is_not_removed(tmp_path: Path) -> None:
    """Its API answers /healthz: refused (the check reaches the replica's own API)."""
    from tests.unit.apiserver import serve

    store = SqliteStore(tmp_path / "db")
    try:
        ctx = context(store, replicated=True, replica=C0)
        with serve(ctx) as url:
            store.put(REPLICAS, "live", replica_record("live", url, "tcp:127.0.0.1:6653"))
            r = delete(ctx, "live")
            assert r.status_code == 409, r.text
            assert r.json() == {"detail": f"replica live is running (its API answers at {url}): "
                                          "stop it first"}
        assert store.get(REPLICAS, "live") is not None
        # the standalone controller has no records to remove
        r = delete(context(store, replicated=False, replica=C0), "live")
        assert r.status_code == 409 and "standalone" in r.json()["detail"]
    finally:
        store.close()
