"""FlowRemoved notices reach the core in batches (controller/openflow/removals.py):
a run of notices queued together is one call per switch, any other event first
delivers the notices queued before it, and a lone notice is delivered at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, register_instance
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.cluster.roles import Roles
from controller.datapath.effects import Effects
from controller.datapath.events import RemovedFlow
from controller.datapath.runtime import DatapathRuntime
from controller.desired.index import DesiredIndex
from controller.openflow import removals
from controller.openflow.admission import Admission
from controller.openflow.app import DaolinetApp, OpenFlowDeps
from controller.openflow.removals import RemovedBatches
from controller.openflow.switches import Switches
from tests.unit.openflow.test_app import Conn, Ev, Msg


class Lab:
    """The app with a plain (no TLS) connection from switch 1, its core's
    FlowRemoved and PortStatus handlers recorded in the order they ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        roles = Roles()
        roles.set_master(1)
        self.switches = Switches(roles)
        self.runtime = DatapathRuntime(DesiredIndex(), roles)
        self.app = DaolinetApp(daolinet=OpenFlowDeps(
            runtime=self.runtime, roles=roles, switches=self.switches,
            admission=Admission({"h1": 1, "h2": 2}.get, tls=False)))
        register_instance(self.app)  # what os-ken's AppManager does: handlers by event
        self.calls: list[tuple[str, int, Any]] = []
        core = self.runtime.core

        def flows_removed(_: Any, dpid: int, notices: list[RemovedFlow]) -> Effects:
            self.calls.append(("removed", dpid, [n.cookie for n in notices]))
            return Effects()

        def port_added(_: Any, dpid: int, port: Any) -> Effects:
            self.calls.append(("port", dpid, port.name))
            return Effects()

        monkeypatch.setattr(core, "flows_removed", flows_removed)
        monkeypatch.setattr(core, "port_added", port_added)
        self.conns = {dpid: Conn(dpid, None, dpid) for dpid in (1, 2)}
        for conn in self.conns.values():
            self.app.on_features(Ev(msg=Msg(conn)))

    def removed(self, dpid: int, cookie: int) -> Any:
        return ofp_event.EventOFPFlowRemoved(parser.OFPFlowRemoved(
            self.conns[dpid], cookie=cookie, packet_count=3, byte_count=300,
            duration_sec=1, duration_nsec=500_000_000))

    def port(self, dpid: int, name: str) -> Any:
        desc = parser.OFPPort(port_no=7, hw_addr="02:00:00:00:00:07", name=name.encode(),
                              config=0, state=0, curr=0, advertised=0, supported=0,
                              peer=0, curr_speed=0, max_speed=0)
        return ofp_event.EventOFPPortStatus(
            parser.OFPPortStatus(self.conns[dpid], reason=ofp.OFPPR_ADD, desc=desc))

    def queue(self, *events: Any) -> None:
        """Queue `events` as switches' connections do, then run os-ken's event loop
        over them (`OSKenApp._event_loop`, without its thread)."""
        for ev in events:
            self.app.events.put((ev, MAIN_DISPATCHER))
        while not self.app.events.empty():
            ev, state = self.app.events.get()
            for handler in self.app.get_handlers(ev, state):
                handler(ev)


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    lab = Lab(monkeypatch)
    yield lab
    lab.app.close()


def test_notices_queued_together_are_one_batch_per_switch_in_order(lab: Lab) -> None:
    lab.queue(lab.removed(1, 11), lab.removed(2, 21), lab.removed(1, 12), lab.removed(1, 13))
    assert lab.calls == [("removed", 1, [11, 12, 13]), ("removed", 2, [21])]


def test_another_event_first_delivers_the_notices_before_it(lab: Lab) -> None:
    lab.queue(lab.removed(1, 11), lab.removed(1, 12), lab.port(1, "p7"), lab.removed(1, 13))
    assert lab.calls == [
        ("removed", 1, [11, 12]), ("port", 1, "p7"), ("removed", 1, [13]),
    ]


def test_a_lone_notice_is_delivered_at_once_with_its_fields(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[list[RemovedFlow]] = []
    monkeypatch.setattr(lab.runtime.core, "flows_removed",
                        lambda _, dpid, notices: got.append(notices) or Effects())
    lab.app.on_flow_removed(lab.removed(2, 21))
    assert got == [[RemovedFlow(21, 3, 300, 1.5)]]


def test_batches_are_delivered_once_full_even_while_events_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivered: list[tuple[int, list[int]]] = []
    batches = RemovedBatches(lambda dpid, ns: delivered.append((dpid, [n.cookie for n in ns])))
    monkeypatch.setattr(removals, "MAX_BATCH", 3)
    assert not batches.add(1, RemovedFlow(1, 0))
    assert not batches.add(2, RemovedFlow(2, 0))
    assert batches.add(1, RemovedFlow(3, 0)), "full: the caller flushes"
    batches.flush()
    batches.flush()  # nothing more held: nothing more delivered
    assert delivered == [(1, [1, 3]), (2, [2])]
