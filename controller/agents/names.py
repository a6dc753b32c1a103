"""What each container may resolve by name: the names tables of a host
(docs/architecture.md, "Names across hosts").

A container resolves the names of exactly the containers it may open a connection
to, as `policy.decide()` says for packets: a name must not tell a container about a
peer it cannot reach.  A host's table maps each of its containers (by address, the
source of the query its name responder sees) to the containers it may reach, each
with its names (container name first, then its aliases and hostname).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint
from controller.desired.policy import (
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    PROTO_NUMBERS,
    Verdict,
    decide,
    port_ranges,
)

log = logging.getLogger(__name__)

# Bounds of one host's table (the agent refuses a larger one): containers of the
# host, peers per container.  A container's peers past the bound are left out (the
# lowest addresses are kept, so the table is the same at every computation).
MAX_SOURCES = 1024
MAX_PEERS = 4096
MAX_NAMES = 2 + 16  # name, hostname and the aliases (models.MAX_ALIASES)


@dataclass(frozen=True)
class Peer:
    """A container one source may reach, and the names it resolves by."""

    ip: ipaddress.IPv4Address
    names: tuple[str, ...]  # its container name first (the answer to a reverse lookup)


@dataclass(frozen=True)
class SourceNames:
    """What the container at `source` may resolve."""

    source: ipaddress.IPv4Address
    peers: tuple[Peer, ...]


def names_of(ep: Endpoint) -> tuple[str, ...]:
    """The names `ep` resolves by, lower case (DNS names compare so), name first."""
    found = [ep.name, *ep.aliases]
    if ep.hostname is not None:
        found.append(ep.hostname)
    return tuple(dict.fromkeys(n.lower() for n in found))[:MAX_NAMES]


def _probes(index: DesiredReads, dst: Endpoint) -> list[tuple[int, int | None]]:
    """The (protocol, port) pairs whose verdicts cover every connection to `dst`.

    A verdict changes with the port only at the edges of the port ranges of the
    destination's firewall rules (a port outside every range meets the rules as no
    port does), so these probes, and ICMP, decide whether any connection may open."""
    probes: list[tuple[int, int | None]] = [
        (IP_PROTO_ICMP, None), (IP_PROTO_TCP, None), (IP_PROTO_UDP, None)
    ]
    targets = [("network", dst.network)]
    targets += [("group", g) for g in sorted(index.groups_of_network(dst.network))]
    for kind, target in targets:
        for rule in index.rules_for(kind, target):
            protos = ((IP_PROTO_TCP, IP_PROTO_UDP) if rule.protocol == "any"
                      else (PROTO_NUMBERS[rule.protocol],))
            for lo, hi in port_ranges(rule.ports):
                for proto in protos:
                    if proto != IP_PROTO_ICMP:
                        probes += [(proto, lo)] + ([(proto, hi + 1)] if hi < 65535 else [])
    return probes


def may_resolve(index: DesiredReads, src: Endpoint, dst: Endpoint) -> bool:
    """May `src` learn `dst`'s names: may it open some connection to `dst`?"""
    first = decide(index, src.ip, dst, IP_PROTO_ICMP, None, src)
    if first.verdict is Verdict.ALLOW:
        return True
    if first.kind == "pair":
        return False  # a pair policy decides every protocol and port alike
    return any(
        decide(index, src.ip, dst, proto, port, src).verdict is Verdict.ALLOW
        for proto, port in _probes(index, dst)[1:]
    )


def host_names(index: DesiredReads, host: str) -> list[SourceNames]:
    """The names table of `host`: for each of its containers, what it may resolve."""
    sources = sorted(index.endpoints(host=host), key=lambda e: e.ip)
    if len(sources) > MAX_SOURCES:
        log.warning("host %s: %d containers; names served for the first %d", host,
                    len(sources), MAX_SOURCES)
        sources = sources[:MAX_SOURCES]
    everyone = sorted(index.endpoints(), key=lambda e: e.ip)
    return [SourceNames(src.ip, _peers(index, src, everyone)) for src in sources]


def _peers(index: DesiredReads, src: Endpoint, everyone: Iterable[Endpoint]) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    for dst in everyone:
        if dst.id == src.id or may_resolve(index, src, dst):
            peers.append(Peer(dst.ip, names_of(dst)))
            if len(peers) == MAX_PEERS:
                log.warning("container %s may reach more than %d containers; names served "
                            "for the first %d", src.name, MAX_PEERS, MAX_PEERS)
                break
    return tuple(peers)
