"""This replica's role of each switch (controller/cluster/roles.py): the only
controller masters every switch while it leads; with masters spread over replicas,
the switches assigned to it while its membership lasts."""

from __future__ import annotations

from controller.cluster.roles import Roles


def test_the_only_controller_masters_every_switch_while_it_leads() -> None:
    roles = Roles()
    changes: list[int | None] = []
    roles.listen(lambda: changes.append(roles.master))
    assert not roles.spread and not roles.is_master(1) and roles.role_generation() == 0
    roles.set_master(4)
    assert roles.is_master(1) and roles.is_master(2) and roles.role_generation() == 4
    roles.confirm_master(1, True)
    assert roles.mastered == {1} and roles.lease_valid()
    roles.set_master(None)  # deposed: slave role requests keep the last generation
    assert not roles.is_master(1) and roles.mastered == set()
    assert roles.role_generation() == 4 and not roles.lease_valid()
    assert changes == [4, None]
    late: list[int | None] = []
    roles.set_master(5)
    roles.listen(lambda: late.append(roles.master))  # told at once: we lead
    assert late == [5]


def test_spread_masters_follow_the_assignment_and_the_membership() -> None:
    valid = [True]
    roles = Roles("c0", lease_valid=lambda: valid[0],
                  member_api=lambda name: f"http://{name}")
    calls: list[int] = []
    roles.listen(lambda: calls.append(roles.assignment_generation))
    roles.set_assignment({1: "c0", 2: "c1"}, 7)
    assert not roles.is_master(1), "no membership yet"
    roles.set_membership(True)
    assert roles.is_master(1) and not roles.is_master(2) and roles.role_generation() == 7
    roles.set_assignment({1: "c1", 2: "c0"}, 6)  # older: ignored
    roles.set_membership(True)  # no change: nobody is told
    assert calls == [7, 7] and roles.owner(2) == "c1" and roles.owner_api(2) == "http://c1"
    assert roles.owner_api(3) is None
    roles.confirm_master(2, True)  # not ours: not counted
    assert roles.mastered == set()
    valid[0] = False
    assert not roles.lease_valid()
