"""The leader's assignment of switches to the members (controller/cluster/masters.py), on the
SQLite store standing in for etcd (memberships are leaderships of their own keys)."""

from __future__ import annotations

from pathlib import Path

from controller.cluster.leases import Lease
from controller.cluster.masters import ASSIGNMENT, ASSIGNMENT_KEY, REACH, Masters, parse_assignment
from controller.store.sqlite import SqliteStore


def test_the_leader_assigns_the_switches_to_the_members_and_again_when_one_goes(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "db")
    elector = Lease(store, {"name": "c0"}, standalone=True)
    elector.start()  # leads
    seen: list[tuple[dict[int, str], int]] = []
    switches = {1, 2, 3, 4}
    masters = Masters(store, {"name": "c0", "api": "http://c0"}, elector,
                      switches=lambda: switches)
    roles = masters.roles
    roles.listen(lambda: seen.append((roles.assignment, roles.assignment_generation)))
    c0 = store.try_lead({"name": "c0", "api": "http://c0"}, 5, key="member/c0")
    c1 = store.try_lead({"name": "c1", "api": "http://c1"}, 5, key="member/c1")
    assert c0 is not None and c1 is not None
    masters.step()
    first = store.get(ASSIGNMENT, ASSIGNMENT_KEY)
    wanted, generation = parse_assignment(first)
    assert sorted(wanted.values()) == ["c0", "c0", "c1", "c1"] and generation > 0
    assert masters.member_apis() == ["http://c1"] and masters.member_api("c1") == "http://c1"
    masters.step()  # nothing changed: nothing written
    assert store.get(ASSIGNMENT, ASSIGNMENT_KEY) == first
    masters.apply(first)
    masters.apply(first)  # the same one again (our own write through the watch)
    assert seen == [(wanted, generation)]
    c1.resign()
    masters.step()
    after, later = parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))
    assert after == dict.fromkeys(switches, "c0") and later > generation
    masters.apply(first)  # an older one arriving late changes nothing
    assert len(seen) == 1
    # a replica that does not lead assigns nothing
    elector.stop()
    c1 = store.try_lead({"name": "c1", "api": "http://c1"}, 5, key="member/c1")
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY)) == (after, later)
    store.close()


def test_a_member_gets_only_switches_connected_to_it(tmp_path: Path) -> None:
    """A replica that just came back is a member before its switches reconnect to
    it: it gets its share once it reported them (kind REACH), not before."""
    store = SqliteStore(tmp_path / "db")
    elector = Lease(store, {"name": "c0"}, standalone=True)
    elector.start()
    connected = {1, 2, 3, 4}
    masters = Masters(store, {"name": "c0", "api": "http://c0"}, elector,
                      switches=lambda: {1, 2, 3, 4})
    for dpid in connected:
        masters.roles.switch_seen(dpid, True)
    assert store.try_lead({"name": "c0"}, 5, key="member/c0") is not None
    assert store.try_lead({"name": "c1"}, 5, key="member/c1") is not None
    masters.report()
    assert store.get(REACH, "c0") == {"replica": "c0", "switches": [1, 2, 3, 4]}
    masters.step()  # c1 reported nothing yet
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == dict.fromkeys(
        connected, "c0")
    masters.apply_reach({"replica": "c1", "switches": [3, 4]})  # through the watch
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {
        1: "c0", 2: "c0", 3: "c1", 4: "c1"}
    store.close()
