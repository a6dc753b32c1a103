"""apply_document: another replica's store writes give the same index and events.

Every inventory operation is run on replica A; the documents it wrote are then
replayed, as the store watch delivers them, on replica B's index.  B must end up
with A's desired state and announce what A announced (policy events may come in
another order or repeated: the core re-decides every live pair on any of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.desired.errors import CorruptDocument
from controller.desired.events import (
    Change,
    EndpointAdded,
    EndpointRemoved,
    GroupChanged,
    HostRegistered,
    NetworkAdded,
    NetworkRemoved,
    RulesChanged,
)
from controller.desired.index import DesiredIndex
from controller.desired.inventory import Inventory
from controller.desired.replication import apply_document
from controller.store.base import StoreUnavailable
from controller.store.sqlite import SqliteStore
from tests.unit.storebackends import WrappedStore

KEY = "k" * 42 + "A="


class RecordingStore(WrappedStore):
    """A SqliteStore that remembers every document write, in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteStore(path))
        self.writes: list[tuple[str, str, dict[str, Any] | None]] = []

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        super().put(kind, key, value, create=create)
        self.writes.append((kind, key, value))

    def delete(self, kind: str, key: str) -> bool:
        existed = super().delete(kind, key)
        if existed:
            self.writes.append((kind, key, None))
        return existed

    def take(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        out, self.writes = self.writes, []
        return out


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Inventory, list[Change], RecordingStore, DesiredIndex]]:
    store = RecordingStore(tmp_path / "a.db")
    announced: list[Change] = []
    inv = Inventory(store, announced.append)  # type: ignore[arg-type]
    replica_b = DesiredIndex()
    for kind, key, doc in store.take():
        apply_document(replica_b, kind, key, doc)
    yield inv, announced, store, replica_b
    store.inner.close()


def _state(index: DesiredIndex) -> dict[str, Any]:
    def dump(items: list[Any]) -> list[Any]:
        return [i.model_dump(mode="json") for i in items]

    return {
        "hosts": dump(index.hosts()),
        "networks": dump(index.networks()),
        "endpoints": sorted(dump(index.endpoints()), key=lambda e: e["id"]),
        "groups": dump(index.groups()),
        "pairs": dump(index.pair_policies()),
        "rules": sorted(dump(index.rules()), key=lambda r: r["id"]),
        "published": sorted(dump(index.published_ports()), key=lambda p: p["id"]),
    }


def _replay(store: RecordingStore, index: DesiredIndex) -> list[Change]:
    events: list[Change] = []
    for kind, key, doc in store.take():
        events += apply_document(index, kind, key, doc)
    return events


def _same_events(a: list[Change], b: list[Change]) -> None:
    assert all(e in b for e in a), f"replica B missed {[e for e in a if e not in b]}"
    assert all(e in a for e in b), f"replica B invented {[e for e in b if e not in a]}"


def test_every_operation_replicates_with_the_same_events(pair) -> None:
    inv, announced, store, b = pair
    ops: list[Callable[[], object]] = [
        lambda: inv.register_host("h1", "198.18.0.11", "a"),
        lambda: inv.register_host("h2", "198.18.0.12", "b", wg_public_key=KEY,
                                  tunnel_address="198.19.0.12"),
        lambda: inv.set_host_key("h2", "j" * 42 + "A="),
        lambda: inv.create_network("web", "10.1.0.0/24"),
        lambda: inv.create_network("db", "10.2.0.0/24"),
        lambda: inv.set_network_external("web", True),
        lambda: inv.add_endpoint("w1", "web", "h1"),
        lambda: inv.add_endpoint("w2", "web", "h2", ip="10.1.0.9"),
        lambda: inv.add_endpoint("d1", "db", "h1"),
        lambda: inv.update_endpoint("w1", name="w1-renamed", docker_id="c" * 64),
        lambda: inv.relocate_endpoint("w2", "h1"),
        lambda: inv.create_group("g", ["web"]),
        lambda: inv.add_group_member("g", "db"),
        lambda: inv.set_pair_policy("w1-renamed", "d1", "deny"),
        lambda: inv.set_pair_policy("w1-renamed", "d1", "allow"),
        lambda: inv.add_rule("network", "db", "allow", "cidr", "192.0.2.0/24", "tcp", [80]),
        lambda: inv.add_rule("group", "g", "deny", "any", None, "udp", [53], position=0),
        lambda: inv.add_rule("network", "db", "deny", "any", None, position=0),
        lambda: inv.publish_port("w2", 8080, 80),
        lambda: inv.clear_pair_policy("w1-renamed", "d1"),
        lambda: inv.delete_rule(inv.rules("network", "db")[0].id),
        lambda: inv.unpublish_port(inv.published_ports()[0].id),
        lambda: inv.remove_group_member("g", "web"),
        lambda: inv.remove_endpoint("d1"),
        lambda: inv.delete_network("db"),  # takes its rules and leaves group g
        lambda: inv.delete_group("g"),
        lambda: inv.register_host("h3", "198.18.0.13"),
        lambda: inv.add_endpoint("x1", "web", "h3"),
        lambda: inv.remove_host("h3", force=True),  # its endpoint goes too
        lambda: inv.remove_host("h2"),  # w2 moved away: no container left
    ]
    for op in ops:
        announced.clear()
        op()
        _same_events(list(announced), _replay(store, b))
        assert _state(b) == _state(inv.index)


def test_a_move_is_removed_then_added_in_order(pair) -> None:
    inv, _, store, b = pair
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    inv.create_network("web", "10.1.0.0/24")
    ep = inv.add_endpoint("w1", "web", "h1")
    _replay(store, b)
    inv.relocate_endpoint("w1", "h2")
    events = _replay(store, b)
    assert [type(e) for e in events] == [EndpointRemoved, EndpointAdded]
    assert events[0].endpoint.host == "h1" and events[1].endpoint.host == "h2"  # type: ignore[union-attr]
    assert b.endpoint(ep.id).host == "h2"  # type: ignore[union-attr]


def test_the_same_document_again_changes_nothing(pair) -> None:
    inv, _, store, b = pair
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    writes = store.take()
    first = [e for k, key, d in writes for e in apply_document(b, k, key, d)]
    assert [type(e) for e in first] == [HostRegistered, NetworkAdded]
    again = [e for k, key, d in writes for e in apply_document(b, k, key, d)]
    assert again == []  # an echo of what the index holds (a replica's own write)


def test_a_network_made_again_under_its_name_is_removed_and_added(pair) -> None:
    inv, _, store, b = pair
    inv.create_network("web", "10.1.0.0/24")
    _replay(store, b)
    inv.delete_network("web")
    inv.create_network("web", "10.9.0.0/24")
    # The watch may fold both into the newest value: removed + added still.
    doc = store.take()[-1][2]
    events = apply_document(b, "network", "web", doc)
    assert [type(e) for e in events] == [NetworkRemoved, NetworkAdded]


def test_group_rules_name_the_groups_networks(pair) -> None:
    inv, _, store, b = pair
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("api", "10.3.0.0/24")
    inv.create_group("g", ["web", "api"])
    _replay(store, b)
    inv.add_rule("group", "g", "allow", "any")
    events = _replay(store, b)
    assert events == [RulesChanged("group", "g", ("api", "web"))]


def test_counters_and_unknown_kinds_are_not_part_of_the_index() -> None:
    index = DesiredIndex()
    assert apply_document(index, "meta", "next_dpid", {"value": 7}) == []
    assert apply_document(index, "replica", "c1", {"name": "c1"}) == []
    assert apply_document(index, "group", "g", None) == []  # deleting what is not there


def test_a_corrupt_document_is_named() -> None:
    with pytest.raises(CorruptDocument, match="corrupt network record 'web'"):
        apply_document(DesiredIndex(), "network", "web", {"name": "web", "subnet": "nope"})


def test_group_deleted_elsewhere_announces_its_members() -> None:
    index = DesiredIndex()
    apply_document(index, "group", "g", {"name": "g", "networks": ["a", "b"]})
    assert apply_document(index, "group", "g", None) == [GroupChanged("g", ("a", "b"), ())]
    assert index.group("g") is None


class FlakySnapshots(WrappedStore):
    """A store whose snapshot fails (etcd unavailable) `failures` times."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(SqliteStore(path))
        self.failures = failures
        self.refused: list[str] = []  # what a change got meanwhile
        self.on_failure: Callable[[], None] = lambda: None

    def snapshot(self):  # type: ignore[no-untyped-def]
        if self.failures > 0:
            self.failures -= 1
            self.on_failure()
            raise StoreUnavailable("etcd: no quorum (test)")
        return super().snapshot()


def test_a_replica_that_lost_its_watch_reloads_and_announces_what_it_missed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd compacted the history the watch needs: while the replica reloads, a change
    through it is refused (503), not made blind; then its index is the store's, the
    difference announced as the watch would have, and changes work again."""
    monkeypatch.setattr("controller.desired.sync.RESYNC_RETRY_SECONDS", 0.01)
    store = FlakySnapshots(tmp_path / "x.db", failures=0)
    # Two replicas on one SQLite store: its watch is a no-op, so b misses all of a's
    # changes, as a replica whose watch lost the history does.
    a = Inventory(store, lambda change: None)  # type: ignore[arg-type]
    a.register_host("h1", "198.18.0.11")
    a.create_network("old", "10.9.0.0/24")
    a.add_endpoint("gone", "old", "h1")
    heard: list[Change] = []
    b = Inventory(store, heard.append, replicated=True)  # type: ignore[arg-type]
    try:
        a.remove_endpoint("gone")
        a.delete_network("old")
        a.create_network("web", "10.1.0.0/24")
        a.add_endpoint("w1", "web", "h1")
        a.register_host("h2", "198.18.0.12")
        assert _state(b.index) != _state(a.index)

        store.failures = 2  # etcd unavailable at first: b retries

        def a_change_meanwhile() -> None:
            try:
                b.create_network("blind", "10.7.0.0/24")
            except StoreUnavailable as exc:
                store.refused.append(str(exc))

        store.on_failure = a_change_meanwhile
        b._sync.watch_lost(StoreUnavailable("etcd: watch: required revision compacted"))
        assert len(store.refused) == 2 and "is reloading the desired state" in store.refused[0]
        assert b.index.network("blind") is None and store.get("network", "blind") is None
        assert _state(b.index) == _state(a.index)
        kinds = [type(c).__name__ for c in heard]
        assert sorted(kinds) == sorted(["HostRegistered", "NetworkRemoved", "NetworkAdded",
                                        "EndpointRemoved", "EndpointAdded"])
        assert kinds.index("EndpointRemoved") < kinds.index("NetworkRemoved")  # children first
        assert kinds.index("NetworkAdded") < kinds.index("EndpointAdded")  # parents first
        assert b._sync._watch_error is None  # changes are let through again
    finally:
        store.inner.close()


def test_a_replica_whose_store_is_closed_keeps_refusing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    try:
        inv = Inventory(store, lambda change: None, replicated=True)
    finally:
        store.close()
    inv._sync.watch_lost(StoreUnavailable("etcd: watch: required revision compacted"))
    with pytest.raises(StoreUnavailable, match=r"lost the store watch .*compacted"):
        inv._sync._catch_up()


def test_enforcing_an_audited_rule_through_another_replica(pair) -> None:
    """The other replicas' cores re-decide on the flip of `audit` (and revoke)."""
    inv, _, store, b = pair
    inv.create_network("web", "10.1.0.0/24")
    rule = inv.add_rule("network", "web", "deny", audit=True)
    _replay(store, b)
    assert b.rule(rule.id).audit is True  # type: ignore[union-attr]
    inv.set_rule_audit(rule.id, False)
    assert _replay(store, b) == [RulesChanged("network", "web", ("web",))]
    assert b.rule(rule.id).audit is False  # type: ignore[union-attr]
