"""A SQLite store that cannot write (read-only, disk full): every change is a 503
naming SQLite's cause, nothing of it is written (not the first of its documents
either), reads go on, and changes work again once the store can write, without a
restart.

Real SQLite errors on a real file: `PRAGMA query_only` makes SQLite refuse writes as
for a read-only database (file modes would not stop root), `PRAGMA max_page_count`
makes the file full (SQLITE_FULL) as a full disk would."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi.testclient import TestClient

from controller.api.deps import ApiContext
from controller.store.sqlite import SqliteStore

READ_ONLY = "store unavailable: attempt to write a readonly database"
FULL = "store unavailable: database or disk is full"


def _db(ctx: ApiContext) -> sqlite3.Connection:
    store = ctx.inventory.store
    assert isinstance(store, SqliteStore)
    return store._conn()


def _stored(ctx: ApiContext) -> dict[str, Any]:
    """What a restarted controller would load: the file, through a new connection."""
    store = ctx.inventory.store
    assert isinstance(store, SqliteStore)
    again = SqliteStore(store.path)
    try:
        return again.snapshot()[1]
    finally:
        again.close()


def _refused(r: Any, detail: str) -> None:
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": detail}
    assert r.headers["Retry-After"] == "1"


def test_a_read_only_store_refuses_changes_and_serves_reads(
    lab: TestClient, ctx: ApiContext
) -> None:
    assert lab.post("/api/v1/networks", json={"name": "spare", "subnet": "10.9.0.0/24"}
                    ).status_code == 201
    # deleting "spare" writes three documents: it, its rule, and the group listing it
    lab.post("/api/v1/groups", json={"name": "g", "networks": ["spare", "web"]})
    lab.post("/api/v1/firewalls", json={"target_kind": "network", "target": "spare",
                                        "action": "allow", "protocol": "tcp", "ports": [80]})
    before, view = _stored(ctx), ctx.inventory.index.view()
    _db(ctx).execute("PRAGMA query_only = ON")

    _refused(lab.post("/api/v1/networks", json={"name": "x", "subnet": "10.8.0.0/24"}),
             READ_ONLY)
    _refused(lab.delete("/api/v1/networks/spare"), READ_ONLY)
    _refused(lab.delete("/api/v1/hosts/h1", params={"force": "true"}), READ_ONLY)
    _refused(lab.post("/api/v1/containers", json={"name": "c9", "network": "web",
                                                  "host": "h2"}), READ_ONLY)
    assert _stored(ctx) == before, "a refused change left part of itself in the file"
    assert ctx.inventory.index.view() is view, "the index published a refused change"

    # reads are served all along
    assert lab.get("/api/v1/networks/spare").status_code == 200
    assert [h["name"] for h in lab.get("/api/v1/hosts").json()] == ["h1", "h2"]
    assert len(lab.get("/api/v1/containers").json()) == 5

    # writable again: the same change goes through, without a restart
    _db(ctx).execute("PRAGMA query_only = OFF")
    assert lab.delete("/api/v1/networks/spare").status_code == 200
    assert "spare" not in {n["name"] for n in _stored(ctx)["network"]}


def test_a_full_disk_refuses_changes_and_writes_nothing(
    lab: TestClient, ctx: ApiContext
) -> None:
    db = _db(ctx)
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: full
    created: list[str] = []
    refused = None
    for i in range(300):
        r = lab.post("/api/v1/networks", json={"name": f"n{i}", "subnet": f"172.16.{i}.0/24"})
        if r.status_code != 201:
            refused = r
            break
        created.append(f"n{i}")
    assert refused is not None, "the file never filled up"
    _refused(refused, FULL)
    failed = f"n{len(created)}"
    stored = {n["name"] for n in _stored(ctx)["network"]}
    assert failed not in stored and set(created) <= stored
    assert lab.get(f"/api/v1/networks/{failed}").status_code == 404  # not in the index
    assert lab.get("/api/v1/networks").status_code == 200

    db.execute(f"PRAGMA max_page_count = {pages * 100}")  # space again
    r = lab.post("/api/v1/networks", json={"name": failed, "subnet": f"172.16.{len(created)}.0/24"})
    assert r.status_code == 201, r.text
