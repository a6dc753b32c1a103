"""Sites: which host pairs talk through WireGuard, and through whom (pure).

Shared by the controller core (which route a connection needs) and the host agent
(which WireGuard peers a host has), so both sides always agree.  See
docs/architecture.md, "Sites".

* Two hosts of one site route to each other's underlay address, unencrypted.
* Two hosts of different sites, both with a tunnel, route to each other's tunnel
  address through their WireGuard interfaces.
* Two hosts of different sites that are both behind NAT (no endpoint) cannot reach
  each other directly: they reach each other through a relay, a host with an
  endpoint and `relay` set, in a third site.  The relay holds the other host's
  tunnel address (and the container addresses of their connections) in its
  allowed-ips, and routes between its peers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

IPv4 = ipaddress.IPv4Address

DEFAULT_KEEPALIVE = 25  # seconds; keeps a NAT mapping open


class Member(Protocol):
    """What the mesh needs to know about a host (controller.desired.models.Host has it)."""

    @property
    def name(self) -> str: ...

    @property
    def site(self) -> str: ...

    @property
    def wg_public_key(self) -> str | None: ...

    @property
    def wg_endpoint(self) -> str | None: ...

    @property
    def tunnel_address(self) -> IPv4 | None: ...

    @property
    def relay(self) -> bool: ...


def tunneled(h: Member) -> bool:
    return h.tunnel_address is not None and bool(h.wg_public_key)


def crosses(a: Member, b: Member) -> bool:
    """a and b are in different sites and talk through WireGuard."""
    return a.site != b.site and tunneled(a) and tunneled(b)


def relay_for(a: Member, b: Member, hosts: Iterable[Member]) -> Member | None:
    """The relay between a and b, when both are behind NAT in different sites."""
    if not crosses(a, b) or a.wg_endpoint or b.wg_endpoint:
        return None
    candidates = sorted(
        (
            h for h in hosts
            if h.relay and h.wg_endpoint and tunneled(h) and h.site not in (a.site, b.site)
        ),
        key=lambda h: h.name,
    )
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class PeerSpec:
    """One WireGuard peer of a host, as the mesh wants it."""

    name: str
    public_key: str
    endpoint: str | None
    tunnels: tuple[IPv4, ...]  # tunnel addresses reached through this peer (/32 each)
    keepalive: int = 0


def mesh_peers(
    me: Member, hosts: Iterable[Member], keepalive: int = DEFAULT_KEEPALIVE
) -> list[PeerSpec]:
    """The peers of `me`: hosts of other sites (NATed pairs through their relay)."""
    everyone = [h for h in hosts if h.name != me.name]
    direct: dict[str, Member] = {}
    via: dict[str, list[IPv4]] = {}
    for h in everyone:
        if not crosses(me, h):
            continue
        relay = relay_for(me, h, [*everyone, me])
        if relay is not None and relay.name != me.name:
            via.setdefault(relay.name, []).append(_tunnel(h))
            continue
        if me.wg_endpoint is None and h.wg_endpoint is None:
            continue  # two NATed hosts and no relay: unreachable
        direct[h.name] = h
    peers = []
    for name, h in sorted(direct.items()):
        tunnels = sorted({_tunnel(h), *via.get(name, [])})
        peers.append(PeerSpec(
            name=name,
            public_key=str(h.wg_public_key),
            endpoint=h.wg_endpoint,
            tunnels=tuple(tunnels),
            keepalive=keepalive if me.wg_endpoint is None else 0,
        ))
    return peers


def _tunnel(h: Member) -> IPv4:
    assert h.tunnel_address is not None
    return h.tunnel_address
