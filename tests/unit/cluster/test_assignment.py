"""Which replica masters which switch (controller/cluster/assignment.py): balanced within
one switch, and stable - only what must move moves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.cluster.assignment import assign


def moved(before: dict[int, str], after: dict[int, str]) -> set[int]:
    """The switches whose master changes."""
    return {d for d, n in after.items() if before.get(d) != n}


def loads(a: dict[int, str], members: list[str]) -> dict[str, int]:
    return {m: sum(1 for n in a.values() if n == m) for m in members}


def test_spread_evenly_and_nothing_moves_when_nothing_changed() -> None:
    a = assign(range(1, 8), ["c0", "c1", "c2"], {})
    assert set(a) == set(range(1, 8))
    assert sorted(loads(a, ["c0", "c1", "c2"]).values()) == [2, 2, 3]
    assert assign(range(1, 8), ["c2", "c1", "c0"], a) == a


def test_a_dead_members_switches_move_and_only_they() -> None:
    a = assign(range(1, 7), ["c0", "c1", "c2"], {})
    b = assign(range(1, 7), ["c0", "c2"], a)
    assert moved(a, b) == {d for d, n in a.items() if n == "c1"}
    assert loads(b, ["c0", "c2"]) == {"c0": 3, "c2": 3}


def test_a_member_joining_takes_its_share_from_the_most_loaded() -> None:
    a = assign(range(1, 7), ["c0", "c1"], {})
    b = assign(range(1, 7), ["c0", "c1", "c2"], a)
    assert loads(b, ["c0", "c1", "c2"]) == {"c0": 2, "c1": 2, "c2": 2}
    assert {b[d] for d in moved(a, b)} == {"c2"} and len(moved(a, b)) == 2


def test_no_members_no_masters_and_gone_switches_are_dropped() -> None:
    assert assign([1, 2], [], {1: "c0"}) == {}
    assert assign([2], ["c0"], {1: "c0", 2: "c0"}) == {2: "c0"}


@given(
    st.sets(st.integers(1, 40), max_size=30),
    st.sets(st.sampled_from(["c0", "c1", "c2", "c3"]), min_size=1),
    st.dictionaries(st.integers(1, 40), st.sampled_from(["c0", "c1", "c2", "c3", "gone"])),
)
def test_balanced_and_keeps_every_switch_it_can(
    switches: set[int], members: set[str], current: dict[int, str]
) -> None:
    a = assign(switches, members, current)
    assert set(a) == switches and set(a.values()) <= members
    counts = loads(a, sorted(members)).values()
    assert max(counts) - min(counts) <= 1
    assert assign(switches, members, a) == a  # applying it again moves nothing
    # a switch moves only if its master is gone or held more than its share
    floor = len(switches) // len(members)
    before = {d: n for d, n in current.items() if d in switches}
    for d in moved(before, a):
        owner = before.get(d)
        assert owner not in members or loads(before, [owner])[owner] > floor, d


def test_a_restarted_member_gets_its_share_once_its_switches_reach_it() -> None:
    a = assign(range(1, 7), ["c0", "c1"], {})
    everything = set(range(1, 7))
    # c2 is back, its switches not yet reconnected: nothing moves to it
    reach = {"c0": everything, "c1": everything, "c2": set()}
    assert assign(range(1, 7), ["c0", "c1", "c2"], a, reach) == a
    # two of them are: it takes its share from those only
    reach["c2"] = {1, 2}
    b = assign(range(1, 7), ["c0", "c1", "c2"], a, reach)
    assert {d for d, n in b.items() if n == "c2"} == {1, 2}
    assert loads(b, ["c0", "c1", "c2"]) == {"c0": 2, "c1": 2, "c2": 2}


def test_a_switch_goes_to_a_member_it_is_connected_to() -> None:
    # c1 is cut off from switch 3 (but not from etcd): 3 is c0's, whatever balance says
    reach = {"c0": {1, 2, 3}, "c1": {1, 2}}
    a = assign([1, 2, 3], ["c0", "c1"], {3: "c1"}, reach)
    assert a[3] == "c0"
    # a switch nobody reaches stays with its master (it may be reconnecting)
    assert assign([1, 2, 4], ["c0", "c1"], {4: "c1"}, reach)[4] == "c1"


@given(
    st.sets(st.integers(1, 30), max_size=20),
    st.sets(st.sampled_from(["c0", "c1", "c2", "c3"]), min_size=1),
    st.dictionaries(st.integers(1, 30), st.sampled_from(["c0", "c1", "c2", "c3", "gone"])),
    st.dictionaries(st.sampled_from(["c0", "c1", "c2", "c3"]),
                    st.sets(st.integers(1, 30), max_size=20)),
)
def test_with_reach_every_reachable_switch_goes_to_one_it_reaches(
    switches: set[int], members: set[str], current: dict[int, str],
    reach: dict[str, set[int]],
) -> None:
    a = assign(switches, members, current, reach)
    assert set(a) == switches and set(a.values()) <= members
    for d, n in a.items():
        if any(d in reach.get(m, set()) for m in members):
            assert d in reach.get(n, set()), (d, n)
        elif current.get(d) in members:
            assert n == current[d], d  # nobody reaches it: it stays
    assert assign(switches, members, a, reach) == a  # applying it again moves nothing
    # full reach is the same as no reach
    full = {m: switches for m in members}
    assert assign(switches, members, current, full) == assign(switches, members, current)


def test_a_fresh_member_keeps_what_it_holds_and_takes_only_what_nobody_else_can() -> None:
    everything = set(range(1, 7))
    a = assign(range(1, 7), ["c0", "c1"], {})
    reach = {"c0": everything, "c1": everything, "c2": everything}
    # c2 is back and reaches every switch, but is fresh: nothing moves to it
    assert assign(range(1, 7), ["c0", "c1", "c2"], a, reach, fresh={"c2"}) == a
    # c1 dies meanwhile: its switches go to c0, the settled one, not to c2
    b = assign(range(1, 7), ["c0", "c2"], a, reach, fresh={"c2"})
    assert set(b.values()) == {"c0"}
    # a switch only c2 reaches goes to c2 even so
    reach["c0"] = everything - {6}
    c = assign(range(1, 7), ["c0", "c2"], a, reach, fresh={"c2"})
    assert c[6] == "c2" and {c[d] for d in range(1, 6)} == {"c0"}
    # what a fresh member holds, it keeps
    assert assign(range(1, 7), ["c0", "c2"], c, reach, fresh={"c2"}) == c
    # settled, it takes its share
    d = assign(range(1, 7), ["c0", "c2"], c, reach)
    assert sorted(loads(d, ["c0", "c2"]).values()) == [3, 3]
    # every member fresh: none is
    assert assign(range(1, 7), ["c2"], {}, None, fresh={"c2"}) == dict.fromkeys(
        range(1, 7), "c2")


@given(
    st.sets(st.integers(1, 30), max_size=20),
    st.sets(st.sampled_from(["c0", "c1", "c2", "c3"]), min_size=1),
    st.dictionaries(st.integers(1, 30), st.sampled_from(["c0", "c1", "c2", "c3", "gone"])),
    st.dictionaries(st.sampled_from(["c0", "c1", "c2", "c3"]),
                    st.sets(st.integers(1, 30), max_size=20)),
    st.sets(st.sampled_from(["c0", "c1", "c2", "c3"])),
)
def test_fresh_members_take_no_switch_a_settled_member_can_master(
    switches: set[int], members: set[str], current: dict[int, str],
    reach: dict[str, set[int]], fresh: set[str],
) -> None:
    a = assign(switches, members, current, reach, fresh)
    assert set(a) == switches and set(a.values()) <= members
    settled = members - fresh
    for d, n in a.items():
        if n in fresh and settled and current.get(d) != n:
            # it went to a fresh member: no settled member could master it
            assert not any(d in reach.get(m, set()) for m in settled), (d, n)
    assert assign(switches, members, a, reach, fresh) == a  # stable
