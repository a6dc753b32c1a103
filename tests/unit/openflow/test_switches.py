"""The switches' registry (controller/openflow/switches.py): a connection that closes
never orphans another open connection of the same datapath (issue 17: after an
impostor left, the real switch stayed unserved although still connected)."""

from __future__ import annotations

from controller.cluster.roles import Roles
from controller.openflow.switches import Switches
from controller.trust.identity import CertRole, Identity

H1 = Identity(CertRole.HOST, "h1", 1)


class Conn:
    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.is_active = True


def test_the_newest_connection_serves_and_the_earlier_one_serves_again() -> None:
    switches = Switches(Roles())
    real, other = Conn(7), Conn(7)
    switches.add(real, H1)
    switches.add(other)
    assert switches.get(7) is other and switches.serves(other) and not switches.serves(real)
    assert switches.remove(other) is True  # it was serving
    assert switches.get(7) is real and switches.serves(real)
    assert switches.peers() == [(real, H1)]
    assert switches.remove(real) is True
    assert switches.get(7) is None and switches.all() == [] and switches.peers() == []


def test_an_earlier_connection_closing_changes_nothing() -> None:
    switches = Switches(Roles())
    old, new = Conn(7), Conn(7)
    switches.add(old)
    switches.add(new)
    assert switches.remove(old) is False
    assert switches.get(7) is new
    assert switches.remove(old) is False  # twice: still nothing


def test_a_closed_earlier_connection_is_not_served_again() -> None:
    switches = Switches(Roles())
    dead, new = Conn(7), Conn(7)
    switches.add(dead)
    switches.add(new)
    dead.is_active = False  # its end not handled yet
    assert switches.remove(new) is True
    assert switches.get(7) is None


def test_a_connection_never_added_is_not_removed_and_not_served() -> None:
    switches = Switches(Roles())
    real, refused = Conn(7), Conn(7)
    switches.add(real)
    assert not switches.serves(refused)
    assert switches.remove(refused) is False
    assert switches.get(7) is real
    unknown = Conn(7)
    unknown.id = None  # type: ignore[assignment]  # closed before its features reply
    assert switches.remove(unknown) is False
