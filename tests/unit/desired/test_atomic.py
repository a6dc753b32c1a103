"""Atomic changes: a change of several documents that fails midway leaves the store and
the index as they were (on SQLite here; tests/integration/test_atomic.py runs the same
tests on a real etcd, and kills real controllers during such changes)."""

from __future__ import annotations

import base64
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller.desired.errors import Conflict, StoreSchemaTooNew
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.desired.replication import SCHEMA_VERSION
from controller.store.base import Documents, Store, StoreConflict, StoreUnavailable
from tests.unit.storebackends import (
    UNIT_BACKENDS,
    Backend,
    WrappedStore,
    etcd_raw,
    open_backend,
)


@pytest.fixture(params=UNIT_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b


class FailingStore(WrappedStore):
    """A store whose `fail_at`-th write (put or delete, counted from arming) raises
    StoreUnavailable, as a store lost midway through a change would."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.fail_at: int | None = None
        self.writes = 0

    def arm(self, fail_at: int) -> None:
        self.fail_at, self.writes = fail_at, 0

    def _count(self) -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes == self.fail_at:
            raise StoreUnavailable(f"store lost at write {self.writes}")

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        self._count()
        super().put(kind, key, value, create=create)

    def delete(self, kind: str, key: str) -> bool:
        self._count()
        return super().delete(kind, key)


def _documents(store: Store) -> Documents:
    return store.snapshot()[1]


def _lab(inv: Inventory) -> None:
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("db", "10.2.0.0/24")
    inv.create_group("tier", ["web", "db"])
    inv.create_group("front", ["web"])
    for port in (80, 443, 8080):
        inv.add_rule("network", "web", "allow", protocol="tcp", ports=[port])
    inv.add_rule("group", "tier", "deny", source_kind="network", source_value="db")


def _host_with_containers(inv: Inventory) -> None:
    inv.register_host("h9", "198.18.0.19")
    inv.add_endpoint("x1", "db", "h9")
    inv.add_endpoint("x2", "db", "h9")


# Each names a change of several documents; the test fails each at every one of its writes.
CHANGES: dict[str, Callable[[Inventory], object]] = {
    # the network, its 3 rules, and the 2 groups that list it
    "delete_network": lambda inv: inv.delete_network("web"),
    # the group and its rule
    "delete_group": lambda inv: inv.delete_group("tier"),
    # a new first rule shifts the 3 others
    "add_rule_first": lambda inv: inv.add_rule(
        "network", "web", "deny", protocol="udp", position=0
    ),
    # the first rule goes, the 2 others shift down
    "delete_first_rule": lambda inv: inv.delete_rule(inv.rules("network", "web")[0].id),
    # the dpid counter and the host
    "register_host": lambda inv: inv.register_host("h2", "198.18.0.12"),
    # the host and its 2 containers' endpoints (a forced removal)
    "remove_host": lambda inv: inv.remove_host("h9", force=True),
}
# What a change needs besides _lab.
SETUPS: dict[str, Callable[[Inventory], None]] = {"remove_host": _host_with_containers}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_failing_at_any_write_leaves_nothing(backend: Backend, change: str) -> None:
    store = FailingStore(backend.open())
    announced: list[Change] = []
    inv = Inventory(store, announced.append)  # type: ignore[arg-type]
    _lab(inv)
    SETUPS.get(change, lambda _: None)(inv)
    before_docs, before_view = _documents(store.inner), inv.index.view()
    probe = backend.open()
    failures = 0
    for fail_at in range(1, 50):
        store.arm(fail_at)
        announced.clear()
        try:
            CHANGES[change](inv)
        except StoreUnavailable:
            failures += 1
            assert _documents(probe) == before_docs, f"write {fail_at} left a half change"
            assert inv.index.view() is before_view, "the index published a half change"
            assert announced == []
            continue
        break  # fail_at is past the change's last write: it went through whole
    assert failures >= 2, f"{change} wrote {failures} document(s): not a multi-document change"
    assert _documents(probe) != before_docs
    # A restart loads the whole change.
    again = Inventory(backend.open(), lambda _: None)
    assert again.hosts() == inv.hosts()
    assert sorted(r.id for r in again.rules()) == sorted(r.id for r in inv.rules())
    assert again.groups() == inv.groups()
    assert again.endpoints() == inv.endpoints()


def test_deleting_a_network_leaves_no_group_listing_it(backend: Backend) -> None:
    """The failure the issue saw: a group still listing a deleted network, which a new
    network of the same name then joined."""
    store = FailingStore(backend.open())
    inv = Inventory(store, lambda _: None)  # type: ignore[arg-type]
    _lab(inv)
    store.arm(fail_at=3)  # after the network and a rule were written
    with pytest.raises(StoreUnavailable):
        inv.delete_network("web")
    inv.delete_network("web")
    inv.create_network("web", "10.9.0.0/24")
    restarted = Inventory(backend.open(), lambda _: None)
    assert [g.networks for g in restarted.groups()] == [(), ("db",)]
    assert restarted.rules("network", "web") == []


class ConflictAtCommit(FailingStore):
    """A store whose transactions fail at their commit: a key was created meanwhile."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.inner.transaction():
            yield
            if self.fail_at is not None:
                raise StoreConflict("network", "taken")


def test_a_commit_refused_is_a_conflict_and_changes_nothing(backend: Backend) -> None:
    store = ConflictAtCommit(backend.open())
    announced: list[Change] = []
    inv = Inventory(store, announced.append)  # type: ignore[arg-type]
    _lab(inv)
    before_docs, before_view = _documents(store.inner), inv.index.view()
    announced.clear()
    store.arm(fail_at=10**6)
    with pytest.raises(Conflict, match="network 'taken' already exists"):
        inv.delete_network("web")
    assert _documents(store.inner) == before_docs
    assert inv.index.view() is before_view and announced == []


# --- at load: bad records repaired or set aside, the schema version ------------------

def put_raw(backend: Backend, kind: str, key: str, text: str) -> None:
    """Store `text` as is under (kind, key), bypassing the store's JSON encoding (a
    record written by hand, or by a broken tool)."""
    if backend.kind == "sqlite":
        db = sqlite3.connect(backend.path)
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO documents (kind, key, value) VALUES (?, ?, ?)",
                           (kind, key, text))
        finally:
            db.close()
        return
    assert backend.cluster is not None
    raw = f"{backend.prefix}/docs/{kind}/{key}".encode()
    value = base64.b64encode(text.encode()).decode()
    etcd_raw(backend.cluster, "/kv/put",
             {"key": base64.b64encode(raw).decode(), "value": value})


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_record_that_does_not_decode_is_set_aside(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    inv = Inventory(backend.open(), lambda _: None)
    _lab(inv)
    store = backend.open()
    store.put("network", "bad", {"name": "bad", "subnet": "nope"})
    put_raw(backend, "group", "cut", '{"name": "cut", "netw')
    caplog.set_level(logging.WARNING)
    restarted = Inventory(backend.open(), lambda _: None)  # starts, without them
    assert [n.name for n in restarted.networks()] == ["db", "web"]
    assert [g.name for g in restarted.groups()] == ["front", "tier"]
    lines = _warnings(caplog)
    assert len(lines) == 2, lines
    assert "store record group 'cut' set aside as quarantine 'group/cut': its stored text " \
        "is not a JSON object" in lines
    assert any(line.startswith("store record network 'bad' set aside as quarantine "
                               "'network/bad': field ") for line in lines), lines
    aside = store.get("quarantine", "network/bad")
    assert aside is not None
    assert aside["document"] == {"name": "bad", "subnet": "nope"}
    assert aside["kind"] == "network" and aside["key"] == "bad" and aside["reason"]
    cut = store.get("quarantine", "group/cut")
    assert cut is not None and cut["document"] == {"__unreadable__": '{"name": "cut", "netw'}
    assert store.get("network", "bad") is None
    # Set aside once: the next start is clean, and the name is free again.
    caplog.clear()
    again = Inventory(backend.open(), lambda _: None)
    assert _warnings(caplog) == []
    again.create_network("bad", "10.7.0.0/24")
    again.create_group("cut")


def test_a_group_listing_a_missing_network_is_repaired(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """What a controller killed between two writes of a network delete left behind
    before atomic changes: the group must not let a new network of the name join."""
    inv = Inventory(backend.open(), lambda _: None)
    _lab(inv)
    store = backend.open()
    store.delete("network", "web")  # the network gone, its groups and rules not
    caplog.set_level(logging.WARNING)
    restarted = Inventory(backend.open(), lambda _: None)
    assert restarted.group("tier").networks == ("db",)
    assert restarted.group("front").networks == ()
    assert restarted.rules("network", "web") == []
    lines = _warnings(caplog)
    assert "store record group 'front' repaired: dropped its member network(s) web, " \
        "which do not exist" in lines
    assert sum("set aside" in line and "target network 'web' does not exist" in line
               for line in lines) == 3
    restarted.create_network("web", "10.9.0.0/24")
    assert "web" not in restarted.group("tier").networks
    assert store.get("group", "tier") == restarted.group("tier").model_dump(mode="json")
    assert len(store.items("quarantine")) == 3


def test_a_container_on_a_missing_network_is_set_aside(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    inv = Inventory(backend.open(), lambda _: None)
    _lab(inv)
    keep = inv.add_endpoint("c1", "db", "h1")
    gone = inv.add_endpoint("c2", "web", "h1")
    store = backend.open()
    for rule in inv.rules("network", "web"):
        store.delete("rule", rule.id)
    store.delete("network", "web")
    caplog.set_level(logging.WARNING)
    restarted = Inventory(backend.open(), lambda _: None)
    assert [e.name for e in restarted.endpoints()] == [keep.name]
    assert f"store record endpoint {gone.id!r} set aside as quarantine " \
        f"'endpoint/{gone.id}': it names the missing network 'web'" in _warnings(caplog)


def test_rule_positions_with_a_gap_are_renumbered(backend: Backend) -> None:
    inv = Inventory(backend.open(), lambda _: None)
    _lab(inv)
    first, second, third = inv.rules("network", "web")
    backend.open().delete("rule", second.id)  # a half delete_rule: the shift not written
    restarted = Inventory(backend.open(), lambda _: None)
    assert [(r.id, r.position) for r in restarted.rules("network", "web")] == [
        (first.id, 0), (third.id, 1)
    ]
    restarted.add_rule("network", "web", "deny")
    assert [r.position for r in restarted.rules("network", "web")] == [0, 1, 2]


def test_the_store_carries_its_schema_version(backend: Backend) -> None:
    store = backend.open()
    Inventory(store, lambda _: None)
    assert store.get("meta", "schema") == {"version": SCHEMA_VERSION}


def test_a_schema_1_store_loads_its_rules_and_pair_policies_as_enforced(
    backend: Backend,
) -> None:
    """A store written before audit mode: its records have no `audit` field."""
    store = backend.open()
    Inventory(store, lambda _: None).create_network("web", "10.1.0.0/24")
    store.put("meta", "schema", {"version": 1})
    store.put("rule", "r1", {  # as a version-1 controller wrote it
        "id": "r1", "target_kind": "network", "target": "web", "position": 0,
        "action": "deny", "source": {"kind": "any", "value": None}, "protocol": "tcp",
        "ports": ["22"], "created_at": "2026-01-01T00:00:00Z",
    })  # fmt: skip
    store.put("pair", "a|b", {"a": "a", "b": "b", "action": "deny",
                              "created_at": "2026-01-01T00:00:00Z"})
    restarted = Inventory(backend.open(), lambda _: None)
    assert restarted.rule("r1").audit is False
    assert restarted.pair_policy("a", "b").audit is False
    assert store.get("meta", "schema") == {"version": SCHEMA_VERSION} == {"version": 2}
    assert store.get("quarantine", "rule/r1") is None  # loaded, not set aside
    assert "audit" not in (store.get("rule", "r1") or {})  # migrated as it is


def test_an_audited_rule_survives_a_restart(backend: Backend) -> None:
    store = backend.open()
    inventory = Inventory(store, lambda _: None)
    inventory.create_network("web", "10.1.0.0/24")
    rule = inventory.add_rule("network", "web", "deny", audit=True)
    assert Inventory(backend.open(), lambda _: None).rule(rule.id).audit is True
    inventory.set_rule_audit(rule.id, False)
    assert Inventory(backend.open(), lambda _: None).rule(rule.id).audit is False


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, "2", None, 0])
def test_a_store_of_a_newer_or_unknown_schema_is_refused(backend: Backend, version: Any) -> None:
    store = backend.open()
    Inventory(store, lambda _: None).create_network("web", "10.1.0.0/24")
    store.put("meta", "schema", {"version": version})
    with pytest.raises(StoreSchemaTooNew) as refused:
        Inventory(backend.open(), lambda _: None)
    if version == SCHEMA_VERSION + 1:
        assert str(refused.value) == (
            f"the store has schema version {version}, newer than this controller's "
            f"{SCHEMA_VERSION}: run a controller of version {version} or newer "
            '(docs/architecture.md, "Store schema and repair at load")'
        )
    else:
        assert f"the store's schema version {version!r} (record meta/schema)" in str(refused.value)
    assert store.get("network", "web") is not None  # refused, not touched
