"""The leader's assignment of switches to the members (controller/cluster/masters.py), on the
SQLite store standing in for etcd (memberships are leaderships of their own keys)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from controller.cluster.leases import Lease
from controller.cluster.masters import ASSIGNMENT, ASSIGNMENT_KEY, REACH, Masters, parse_assignment
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore


def leading_member(store: SqliteStore, switches: Callable[[], set[int]],
                   connected: set[int], *, hold_down: float = 0.0,
                   clock: Callable[[], float] = time.monotonic) -> Masters:
    """c0: the leader and a member, with `connected` connected to it."""
    elector = Lease(store, {"name": "c0"}, standalone=True)
    elector.start()
    masters = Masters(store, {"name": "c0", "api": "http://c0"}, elector, switches=switches,
                      hold_down=hold_down, clock=clock)
    for dpid in connected:
        masters.roles.switch_seen(dpid, True)
    assert store.try_lead({"name": "c0"}, 5, key="member/c0") is not None
    return masters


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
    connected = {1, 2, 3, 4}
    masters = leading_member(store, lambda: {1, 2, 3, 4}, connected)
    assert store.try_lead({"name": "c1"}, 5, key="member/c1") is not None
    masters.report()
    # not a member through `masters.membership` here: written under generation 0
    assert store.get(REACH, "c0") == {"replica": "c0", "process": masters.process,
                                      "switches": [1, 2, 3, 4]}
    masters.step()  # c1 reported nothing yet
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == dict.fromkeys(
        connected, "c0")
    masters.apply_reach({"replica": "c1", "switches": [3, 4]})  # through the watch
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {
        1: "c0", 2: "c0", 3: "c1", 4: "c1"}
    store.close()


def test_a_returning_member_gets_no_switch_by_the_report_of_its_previous_process(
    tmp_path: Path,
) -> None:
    """A replica killed and started again is a member before its switches reconnect to
    it; the report its previous process left in the store (kind REACH) must not give
    it those switches: they would go to a replica that cannot master them yet, and
    back again once it reports (what made test_replicas' confirmed masters miss the
    assignment after a replica returned)."""
    store = SqliteStore(tmp_path / "db")
    masters = leading_member(store, lambda: {1, 2, 3, 4}, {1, 2, 3, 4})
    before = store.try_lead({"name": "c1", "process": "p1"}, 5, key="member/c1")
    assert before is not None
    masters.apply_reach({"replica": "c1", "process": "p1", "switches": [3, 4]})
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {
        1: "c0", 2: "c0", 3: "c1", 4: "c1"}
    before.resign()  # c1 dies ...
    masters.step()
    assert set(parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0].values()) == {"c0"}
    # ... and comes back: a new process
    assert store.try_lead({"name": "c1", "process": "p2"}, 5, key="member/c1") is not None
    masters.step()  # its old report is still all the leader has of c1
    assert set(parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0].values()) == {"c0"}
    # its new process reports what reconnected to it: that is what it gets
    masters.apply_reach({"replica": "c1", "process": "p2", "switches": [3]})
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {
        1: "c0", 2: "c0", 3: "c1", 4: "c0"}
    store.close()


def test_a_member_that_takes_its_membership_again_keeps_its_switches(
    tmp_path: Path,
) -> None:
    """A replica that lost its membership for a moment (the store out of reach) and
    took it again, in the same process, keeps what it reported: its report is still
    true, and moving its switches away until it reports again would be a takeover for
    nothing."""
    store = SqliteStore(tmp_path / "db")
    masters = leading_member(store, lambda: {1, 2}, {1, 2})
    first = store.try_lead({"name": "c1", "process": "p1"}, 5, key="member/c1")
    assert first is not None
    masters.apply_reach({"replica": "c1", "process": "p1", "switches": [2]})
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {1: "c0", 2: "c1"}
    first.resign()
    again = store.try_lead({"name": "c1", "process": "p1"}, 5, key="member/c1")
    assert again is not None and again.generation != first.generation
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {1: "c0", 2: "c1"}
    store.close()


def test_a_member_reports_with_its_process_and_its_membership_record_names_it(
    tmp_path: Path,
) -> None:
    """The report names the process that wrote it, and so does the membership the
    leader compares it with; a new process reports even the same switches again."""
    store = SqliteStore(tmp_path / "db")
    elector = Lease(store, {"name": "c1"}, standalone=True)
    masters = Masters(store, {"name": "c1", "api": "http://c1"}, elector,
                      switches=lambda: {1})
    masters.roles.switch_seen(1, True)
    masters.report()
    assert store.get(REACH, "c1") == {"replica": "c1", "process": masters.process,
                                      "switches": [1]}
    masters.membership.step()  # c1 becomes a member
    assert masters.is_member
    assert store.members()["c1"][0]["process"] == masters.process
    later = Masters(store, {"name": "c1", "api": "http://c1"}, elector, switches=lambda: {1})
    assert later.process != masters.process
    later.roles.switch_seen(1, True)
    later.report()
    assert store.get(REACH, "c1")["process"] == later.process
    masters.membership.stop()


def test_a_removed_hosts_switch_is_no_longer_assigned(tmp_path: Path) -> None:
    """The switches assigned are those of the registered hosts, as the controller
    wires it (controller/main.py): a removed host's switch leaves the assignment at
    the leader's next round, and the others are balanced again."""
    store = SqliteStore(tmp_path / "db")
    inventory = Inventory(store, lambda change: None)
    for i in (1, 2, 3):
        inventory.register_host(f"h{i}", f"198.18.0.{10 + i}")
    masters = leading_member(store, lambda: {h.dpid for h in inventory.index.hosts()}, set())
    assert store.try_lead({"name": "c1"}, 5, key="member/c1") is not None
    masters.step()
    before, generation = parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))
    assert set(before) == {1, 2, 3}
    gone = inventory.host("h3").dpid
    inventory.remove_host("h3")
    masters.step()
    after, later = parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))
    assert set(after) == {1, 2, 3} - {gone}
    assert sorted(after.values()) == ["c0", "c1"] and later > generation
    store.close()


def test_a_returning_member_gets_its_share_only_after_the_hold_down(tmp_path: Path) -> None:
    """A member that came back while we lead takes no switch another member masters
    until `hold_down` has passed (then it gets its share); the members there when we
    began to lead are not held down."""
    store = SqliteStore(tmp_path / "db")
    now = [100.0]
    masters = leading_member(store, lambda: {1, 2, 3, 4}, {1, 2, 3, 4}, hold_down=10.0,
                             clock=lambda: now[0])
    first = store.try_lead({"name": "c1", "process": "p1"}, 5, key="member/c1")
    assert first is not None
    masters.apply_reach({"replica": "c1", "process": "p1", "switches": [1, 2, 3, 4]})
    masters.step()  # c1 was a member when c0 began to lead: its share at once
    assert sorted(parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0].values()) == [
        "c0", "c0", "c1", "c1"]
    first.resign()  # c1 dies: its switches go to c0 at once
    masters.step()
    assert set(parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0].values()) == {"c0"}
    # c1 comes back and every switch reconnects to it: it waits
    assert store.try_lead({"name": "c1", "process": "p2"}, 5, key="member/c1") is not None
    masters.apply_reach({"replica": "c1", "process": "p2", "switches": [1, 2, 3, 4]})
    for elapsed in (0.0, 5.0, 9.9):
        now[0] = 100.0 + elapsed
        masters.step()
        assignment = parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0]
        assert set(assignment.values()) == {"c0"}, elapsed
    now[0] = 110.1
    masters.step()
    assert sorted(parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0].values()) == [
        "c0", "c0", "c1", "c1"]
    store.close()


def test_a_held_down_member_still_takes_a_switch_no_settled_member_can_master(
    tmp_path: Path,
) -> None:
    """The hold-down delays a move, never a master: a switch that only the returning
    member reaches goes to it at once."""
    store = SqliteStore(tmp_path / "db")
    now = [100.0]
    masters = leading_member(store, lambda: {1, 2, 3}, {1, 2}, hold_down=10.0,
                             clock=lambda: now[0])
    masters.step()
    assert store.try_lead({"name": "c1", "process": "p1"}, 5, key="member/c1") is not None
    masters.apply_reach({"replica": "c1", "process": "p1", "switches": [1, 2, 3]})
    masters.step()
    assert parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))[0] == {
        1: "c0", 2: "c0", 3: "c1"}
    store.close()
