"""Atomic changes: a change of several documents that fails midway leaves the store and
the index as they were (on SQLite here; tests/integration/test_atomic.py runs the same
tests on a real etcd, and kills real controllers during such changes)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.store.base import Documents, Store, StoreUnavailable
from tests.unit.storebackends import UNIT_BACKENDS, Backend, open_backend


@pytest.fixture(params=UNIT_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b


class FailingStore:
    """A store whose `fail_at`-th write (put or delete, counted from arming) raises
    StoreUnavailable, as a store lost midway through a change would."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
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
        self.inner.put(kind, key, value, create=create)

    def delete(self, kind: str, key: str) -> bool:
        self._count()
        return self.inner.delete(kind, key)

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.inner.get(kind, key)

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
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_failing_at_any_write_leaves_nothing(backend: Backend, change: str) -> None:
    store = FailingStore(backend.open())
    announced: list[Change] = []
    inv = Inventory(store, announced.append)  # type: ignore[arg-type]
    _lab(inv)
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
