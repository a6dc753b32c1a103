"""The path a connection's packets take between two hosts (pure): one derivation for
the core (which route a host needs, which relay carries a connection, GET /routes'
`path`) and for GET /trace (the hops it shows), so what trace shows is what the core
sets up.  See docs/architecture.md, "Sites".

* Same host: straight to the container (OVS delivers it; no kernel in between).
* Same site, or a host without a tunnel: the sending host routes to the receiving
  host's underlay address.
* Different sites, both with a tunnel: the sending host routes to the receiving host's
  tunnel address, through its WireGuard interface (the packet leaves the sending
  host's tunnel address).
* Different sites, both behind NAT: through a relay of a third site, which receives
  the packet on its tunnel address and forwards it through WireGuard to the receiving
  host's (sites.relay_for picks the relay).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from controller.datapath import sites

IPv4 = ipaddress.IPv4Address

PathKind = Literal["local", "underlay", "wireguard", "relay"]
HopKind = Literal["underlay", "tunnel", "relay", "container"]


class Node(sites.Member, Protocol):
    """A host as a path needs it (controller.desired.models.Host has it)."""

    @property
    def address(self) -> IPv4: ...


@dataclass(frozen=True)
class Hop:
    """One address a packet passes: a host's underlay or tunnel address, a relay's
    tunnel address, or the destination container's."""

    address: IPv4
    host: str | None  # None: the destination container
    kind: HopKind


@dataclass(frozen=True)
class HostPath:
    """How a packet from a container of `src` reaches a container of `dst`."""

    src: Node
    dst: Node
    kind: PathKind
    relay: sites.Member | None = None  # set when kind == "relay"

    @property
    def label(self) -> str:
        """GET /routes' `path`: "local", "underlay", "wireguard" or "relay:R"."""
        return f"relay:{self.relay.name}" if self.relay is not None else self.kind

    def hops(self) -> list[Hop]:
        """The hosts' addresses the packet passes, in order (no container)."""
        if self.kind == "local":
            return []
        if self.kind == "underlay":
            return [Hop(self.src.address, self.src.name, "underlay"),
                    Hop(self.dst.address, self.dst.name, "underlay")]  # fmt: skip
        out = [Hop(_tunnel(self.src), self.src.name, "tunnel")]
        if self.relay is not None:
            out.append(Hop(_tunnel(self.relay), self.relay.name, "relay"))
        out.append(Hop(_tunnel(self.dst), self.dst.name, "tunnel"))
        return out


def next_hop(src: Node, dst: Node) -> IPv4:
    """Where host `src` routes `dst`'s containers: across sites `dst`'s tunnel address
    (a `wg` route; a relay in between is WireGuard's business, not the route's), else
    its underlay address."""
    if sites.crosses(src, dst):
        return _tunnel(dst)
    return dst.address


def host_path(src: Node, dst: Node, hosts: Callable[[], Iterable[Node]]) -> HostPath:
    """The path from `src` to `dst`; `hosts` lists every host, and is called only when
    a relay has to be found (listing the hosts is not free on the core's hot path)."""
    if src.name == dst.name:
        return HostPath(src, dst, "local")
    if not sites.crosses(src, dst):
        return HostPath(src, dst, "underlay")
    relay = sites.relay_for(src, dst, hosts()) if _both_behind_nat(src, dst) else None
    if relay is not None:
        return HostPath(src, dst, "relay", relay)
    return HostPath(src, dst, "wireguard")


def trace_hops(
    src: Node | None, dst: Node, dst_ip: IPv4, hosts: Callable[[], Iterable[Node]]
) -> tuple[str, list[Hop]]:
    """GET /trace's path to container `dst_ip` on `dst`, from a container on `src` (None:
    from outside daolinet, which enters at `dst`'s underlay address): its label as GET
    /routes shows it ("external" from outside) and its hops, the container last."""
    container = Hop(dst_ip, None, "container")
    if src is None:
        return "external", [Hop(dst.address, dst.name, "underlay"), container]
    path = host_path(src, dst, hosts)
    return path.label, [*path.hops(), container]


def _both_behind_nat(src: Node, dst: Node) -> bool:
    return src.wg_endpoint is None and dst.wg_endpoint is None


def _tunnel(h: sites.Member) -> IPv4:
    assert h.tunnel_address is not None, f"host {h.name} has no tunnel"
    return h.tunnel_address
