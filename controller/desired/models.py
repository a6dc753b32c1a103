"""Desired state of daolinet: the records the store keeps and the API shows.

These are plain pydantic models shared by the store, the API, the core and the
host agent (which receives endpoint records when it attaches a container).  Their
addresses obey the rules of addresses.py, checked here too: a stored record that
breaks one does not decode (`decode` in replication.py raises `CorruptDocument`).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from controller.desired.addresses import (
    check_container_address,
    check_endpoint,
    check_gateway,
    check_host_address,
    check_subnet,
    field_check,
)

# The virtual gateway answers ARP for every address a container asks about and is
# the first hop of every container.  Its MAC is the same on every host so that a
# container moved to another host (or site) needs no change inside.
GATEWAY_MAC = "02:da:00:00:00:01"

# The name responder of every host (docs/architecture.md, "Names across hosts"): the
# same link-local address on each (a /32 on the loopback link), given to dockerd as
# its `dns`, in no daolinet subnet; each container port's flows take DNS to it.
NAMES_RESPONDER = ipaddress.IPv4Address("169.254.218.53")
DNS_PORT = 53

# Kernel route protocol number the host agent stamps on every route it owns, so a
# resync can remove exactly the routes daolinet made and nothing else.
ROUTE_PROTO = 211

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
]
MacAddress = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", to_lower=True)
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def mac_for_ip(ip: ipaddress.IPv4Address) -> str:
    """A stable, locally administered MAC derived from the container IP.

    IPs are unique across daolinet (overlapping subnets are refused), so the MAC
    is unique too, and it survives a move because the IP does.
    """
    return "02:da:" + ":".join(f"{b:02x}" for b in ip.packed)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Host(Record):
    name: Name
    # underlay address other hosts route to
    address: Annotated[
        ipaddress.IPv4Address, AfterValidator(field_check(check_host_address, "address"))
    ]
    site: Name = "default"
    dpid: int = Field(ge=1, lt=2**64)
    registered_at: datetime = Field(default_factory=utcnow)
    # WireGuard between sites (docs/architecture.md, "Sites"); all None on a host
    # without a tunnel, which then only reaches hosts of its own site.
    wg_public_key: str | None = None
    # "IP:PORT" others reach it at; None: behind NAT
    wg_endpoint: Annotated[
        str, AfterValidator(field_check(check_endpoint, "wg_endpoint"))
    ] | None = None
    tunnel_address: Annotated[
        ipaddress.IPv4Address, AfterValidator(field_check(check_host_address, "tunnel_address"))
    ] | None = None
    relay: bool = False  # forwards between hosts behind NAT of two other sites


# At most this many reserved (aux) addresses per network.
MAX_RESERVED = 64
# A network's labels (Docker's `--label`), kept so that every engine's copy has them.
MAX_LABELS = 32
LabelKey = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
]
LabelValue = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Network(Record):
    id: str
    name: Name
    subnet: Annotated[ipaddress.IPv4Network, AfterValidator(field_check(check_subnet, "subnet"))]
    gateway: ipaddress.IPv4Address
    mtu: int = Field(default=1500, ge=576, le=9000)
    external: bool = False  # containers may reach addresses outside daolinet (masquerade)
    # No external access ever: never external, no published ports (Docker's --internal).
    internal: bool = False
    # Addresses no container is given (Docker's --aux-address); inside the subnet.
    reserved: tuple[ipaddress.IPv4Address, ...] = Field(default=(), max_length=MAX_RESERVED)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    created_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _gateway_in_subnet(self) -> Network:
        field_check(lambda f, gw: check_gateway(f, gw, self.subnet), "gateway")(self.gateway)
        return self


# The names of a container besides its `name` (docs/architecture.md, "Names across
# hosts"): Docker's `--network-alias` aliases and `--hostname`, as DNS names (labels
# of letters, digits, `_` and inner `-`, at most 63 each, 253 in all).
DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DnsName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253,
                      pattern=rf"^{DNS_LABEL}(?:\.{DNS_LABEL})*$"),
]
MAX_ALIASES = 16


class Endpoint(Record):
    """A container's attachment to one network on one host."""

    id: str
    name: Name
    network: Name
    host: Name
    ip: Annotated[ipaddress.IPv4Address, AfterValidator(field_check(check_container_address, "ip"))]
    mac: MacAddress
    port: str  # OVS port name (host side of the veth), at most 15 characters
    created_at: datetime = Field(default_factory=utcnow)
    docker_id: str | None = None  # the Docker container id, for containers run by Docker
    # Other names it resolves by (the Docker plugin records them after the join).
    aliases: tuple[DnsName, ...] = Field(default=(), max_length=MAX_ALIASES)
    hostname: DnsName | None = None


RouteKind = Literal["via", "local", "wg"]


class KernelRoute(Record):
    """One kernel route a host agent must hold (the unit of the agent stream).

    kind "via":   dst/32 via <underlay address of the host that runs dst>
    kind "local": dst/32 dev <bridge>, with a permanent neighbour dst -> lladdr
    kind "wg":    dst/32 via <tunnel address of the host that runs dst> (through the
                  WireGuard interface), and dst in the allowed-ips of the peer that
                  holds that tunnel address (the host itself, or its relay)
    """

    kind: RouteKind
    dst: ipaddress.IPv4Address
    via: ipaddress.IPv4Address | None = None
    lladdr: MacAddress | None = None


class NatRule(Record):
    """One host-kernel NAT rule a host agent must hold (nftables table `daolinet`).

    kind "dnat":       a published port: `address:port/protocol` -> `to:to_port`
    kind "masquerade": traffic from `source` (an external network's subnet) to an
                       address outside every daolinet subnet (`exclude`) leaves the
                       host with the host's address
    """

    kind: Literal["dnat", "masquerade"]
    protocol: Literal["tcp", "udp"] | None = None
    address: ipaddress.IPv4Address | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    to: ipaddress.IPv4Address | None = None
    to_port: int | None = Field(default=None, ge=1, le=65535)
    source: ipaddress.IPv4Network | None = None
    exclude: tuple[ipaddress.IPv4Network, ...] = ()


# --- policy (see docs/architecture.md, "Policy") ---------------------------------------
Action = Literal["allow", "deny"]
Protocol = Literal["tcp", "udp", "icmp", "any"]


class Group(Record):
    """Networks that are members of one group reach each other."""

    name: Name
    networks: tuple[Name, ...] = ()
    created_at: datetime = Field(default_factory=utcnow)


class PairPolicy(Record):
    """`connect A B` (allow) or `disconnect A B` (deny), by container name.

    Names, not ids: a container re-created under its name (a move, `docker run`
    again) keeps its policy.  `a` < `b`, so a pair has one key.
    """

    a: Name
    b: Name
    action: Action
    # Audit mode (docs/architecture.md, "Audit mode"): decides nothing; the connection
    # log says what it would have decided.  A record without it (schema 1) is enforced.
    audit: bool = False
    created_at: datetime = Field(default_factory=utcnow)


SourceKind = Literal["container", "network", "group", "cidr", "any"]


class RuleSource(Record):
    kind: SourceKind
    value: str | None = None  # container/network/group name, or a CIDR; None for "any"


class FirewallRule(Record):
    """An ordered ingress rule on a network or a group (first match wins)."""

    id: str
    target_kind: Literal["network", "group"]
    target: Name
    position: int = Field(ge=0)  # order among the rules of one target
    action: Action
    source: RuleSource
    protocol: Protocol = "any"
    ports: tuple[str, ...] = ()  # "80" or "8000-8100"; empty = every port
    audit: bool = False  # as PairPolicy.audit
    created_at: datetime = Field(default_factory=utcnow)


class PublishedPort(Record):
    """host:port[/proto] -> container:port, DNAT on the host running the container."""

    id: str
    container: Name
    protocol: Literal["tcp", "udp"] = "tcp"
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    created_at: datetime = Field(default_factory=utcnow)
