"""The core is replayable: a recorded sequence of events (each with the version of
the desired state its handler was pinned to) gives the same effects through any
fresh core, as often as it is replayed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.datapath.core.facade import Core
from controller.datapath.effects import Effects
from controller.datapath.state import CoreState
from controller.desired.index import DesiredView
from controller.desired.models import RuleSource
from tests.unit.datapath.test_enforcement import deliver, rule
from tests.unit.flowsim import Lab

IDLE = 10


@dataclass
class Call:
    handler: str
    desired: DesiredView
    args: tuple[Any, ...]


@dataclass
class Recording:
    """A core whose handler calls and effects are logged (events as they came in)."""

    core: Core
    calls: list[Call] = field(default_factory=list)
    effects: list[Effects] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.core, name)
        if name.startswith("_") or name == "state" or not callable(attr):
            return attr

        def handler(desired: DesiredView, *args: Any) -> Any:
            self.calls.append(Call(name, desired, copy.deepcopy(args)))
            out = attr(desired, *args)
            self.effects.append(copy.deepcopy(out))
            return out

        return handler


def replay(calls: list[Call]) -> list[Any]:
    core = Core(CoreState(idle_timeout=IDLE))
    handlers: dict[str, Callable[..., Any]] = {}
    out = []
    for c in calls:
        fn = handlers.setdefault(c.handler, getattr(core, c.handler))
        out.append(fn(c.desired, *copy.deepcopy(c.args)))
    return out


def scenario() -> dict[str, Recording]:
    """Two replicas, connections open and stateful, inside and across replicas,
    expiry, a policy change, a controller reconnect, a failed setup, an endpoint
    removed and a switch handed over."""
    recordings: dict[str, Recording] = {}

    def make(state: CoreState) -> Any:
        rec = Recording(Core(state))
        recordings[f"c{len(recordings)}"] = rec
        return rec

    owners = {"h1": "c0", "h2": "c1", "h3": "c0"}
    lab = Lab(list(owners), idle_timeout=IDLE, owners=owners, make_core=make)
    lab.network("web", "10.1.0.0/24")
    lab.network("db", "172.31.7.0/24")
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    c = lab.container("h3", "c", "web", "10.1.0.7")
    d = lab.container("h1", "d", "db", "172.31.7.9")
    deliver(lab, "h1", lab.ip_packet(a, "10.1.0.6"))
    lab.through_kernels("h1", "h2", lab.ip_packet(a, "10.1.0.6"))  # to b's replica
    deliver(lab, "h2", lab.ip_packet(b, "10.1.0.5"))
    deliver(lab, "h1", lab.ip_packet(a, "10.1.0.7"))
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="network", value="db"), "tcp",
                            ("80",), position=1))
    lab.policy_changed()
    deliver(lab, "h1", lab.tcp_packet(d, "10.1.0.6", 80))
    deliver(lab, "h1", lab.tcp_packet(d, "10.1.0.7", 22))  # denied
    lab.advance(IDLE + 1.0)  # flows expire: FlowRemoved
    for core in lab.cores.values():
        lab.run(core.tick(lab.view(), lab.now), core)
    deliver(lab, "h3", lab.ip_packet(c, "10.1.0.5"))
    lab.connect("h1")  # a reconnect: switch, ports, dump, snapshot
    lab.agents["h3"].auto_ack = False
    deliver(lab, "h1", lab.ip_packet(a, "10.1.0.7"))
    lab.advance(5.0)
    for core in lab.cores.values():
        lab.run(core.tick(lab.view(), lab.now), core)  # the waiting setup fails
    lab.agents["h3"].auto_ack = True
    lab.remove(c)
    lab.hand_over("h3", "c1", 2)
    deliver(lab, "h1", lab.ip_packet(a, "10.1.0.6"))
    return recordings


def test_a_recorded_event_sequence_replays_to_the_same_effects_twice() -> None:
    recordings = scenario()
    assert set(recordings) == {"c0", "c1"}
    for rec in recordings.values():
        handlers = {c.handler for c in rec.calls}
        assert {"packet_in", "flows_removed", "flows_dumped", "policy_changed",
                "endpoint_added", "endpoint_removed", "tick"} <= handlers
        assert len({id(c.desired) for c in rec.calls}) > 1, "versions change on the way"
        effects = [fx for fx in rec.effects if isinstance(fx, Effects)]
        assert any(fx.messages for fx in effects) and any(fx.deltas for fx in effects)
        first, second = replay(rec.calls), replay(rec.calls)
        assert first == second
        assert first == rec.effects  # and what the live core did
