"""What a handler of the pure core returns for the runtime to carry out: OpenFlow
messages, route deltas and snapshots for agents, NAT sets, exports to and answers
for other replicas, and the events of the connection log."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.datapath.connections import ConnEvent
from controller.datapath.messages import OFMessage
from controller.datapath.needs import ImportDone, NeedsExport
from controller.desired.models import KernelRoute, NatRule


@dataclass(frozen=True)
class KernelRouteDelta:
    host: str
    token: int | None
    add: tuple[KernelRoute, ...] = ()
    remove: tuple[KernelRoute, ...] = ()


@dataclass(frozen=True)
class RouteSnapshot:
    """Everything a (re)connecting agent's host must hold; acked with `token`."""

    host: str
    token: int
    routes: tuple[KernelRoute, ...]


@dataclass
class Effects:
    messages: list[tuple[int, OFMessage]] = field(default_factory=list)
    deltas: list[KernelRouteDelta] = field(default_factory=list)
    synced_hosts: list[str] = field(default_factory=list)
    nat: dict[str, list[NatRule]] = field(default_factory=dict)  # host -> its whole NAT set
    exports: list[NeedsExport] = field(default_factory=list)  # to other replicas' hosts
    imports_done: list[ImportDone] = field(default_factory=list)
    snapshots: list[RouteSnapshot] = field(default_factory=list)
    connections: list[ConnEvent] = field(default_factory=list)  # for the connection log

    def send(self, dpid: int, *msgs: OFMessage) -> None:
        self.messages.extend((dpid, m) for m in msgs)

    def extend(self, other: Effects) -> None:
        self.messages.extend(other.messages)
        self.deltas.extend(other.deltas)
        self.synced_hosts.extend(other.synced_hosts)
        self.nat.update(other.nat)
        self.exports.extend(other.exports)
        self.imports_done.extend(other.imports_done)
        self.snapshots.extend(other.snapshots)
        if other.connections:
            self.connections.extend(other.connections)
