"""Request and response bodies of the REST API (one schema per direction).

Addresses in requests are plain strings: the inventory parses them, so a bad
value gets a message naming the field and what is wrong with it
("subnet 10.1.0.1/24 has host bits set (did you mean 10.1.0.0/24?)").
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from controller.desired.models import (
    MAX_ALIASES,
    MAX_LABELS,
    MAX_RESERVED,
    Action,
    DnsName,
    Endpoint,
    FirewallRule,
    Group,
    Host,
    LabelKey,
    LabelValue,
    Name,
    Network,
    PairPolicy,
    Protocol,
    PublishedPort,
    SourceKind,
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- hosts --------------------------------------------------------------------------
class HostIn(_In):
    name: Name
    address: str = Field(
        description="Underlay IPv4 address other hosts route to", examples=["198.18.0.11"]
    )
    site: Name = "default"
    # WireGuard (a host with a tunnel to other sites; docs/architecture.md, "Sites")
    wg_public_key: str | None = Field(default=None, description="WireGuard public key")
    wg_endpoint: str | None = Field(
        default=None, description="IP:PORT other sites reach it at; null: behind NAT",
        examples=["198.18.1.11:51820"],
    )
    tunnel_address: str | None = Field(default=None, description="Tunnel IPv4 address")
    relay: bool = Field(default=False, description="Relays between NATed hosts")


class HostOut(_Out):
    name: str
    address: ipaddress.IPv4Address
    site: str
    dpid: int
    registered_at: datetime
    openflow_targets: list[str]
    wg_public_key: str | None = None
    wg_endpoint: str | None = None
    tunnel_address: ipaddress.IPv4Address | None = None
    relay: bool = False

    @classmethod
    def of(cls, host: Host, openflow_targets: list[str]) -> HostOut:
        return cls(**host.model_dump(), openflow_targets=openflow_targets)


class HostRemovedOut(HostOut):
    """A removed host, and the containers whose endpoints went with it (forced)."""

    removed_containers: list[str] = Field(default_factory=list)


# --- networks -----------------------------------------------------------------------
class NetworkIn(_In):
    name: Name
    subnet: str = Field(description="IPv4 CIDR", examples=["10.1.0.0/24"])
    gateway: str | None = Field(
        default=None, description="Default: first address of the subnet", examples=["10.1.0.1"]
    )
    mtu: int | None = Field(default=None, ge=576, le=9000, description="Default: 1500")
    external: bool = Field(
        default=False, description="Containers may reach addresses outside daolinet"
    )
    internal: bool = Field(
        default=False,
        description="Never any external access: not external, no published ports",
    )
    reserved: list[Annotated[str, Field(max_length=15)]] = Field(
        default_factory=list, max_length=MAX_RESERVED,
        description="Addresses no container is given (Docker's --aux-address)",
        examples=[["10.1.0.250"]],
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_LABELS,
        description="Kept for Docker: every engine's copy of the network gets them",
    )


class NetworkPatch(_In):
    external: bool | None = Field(
        default=None, description="Containers may reach addresses outside daolinet"
    )


class NetworkOut(_Out):
    id: str
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    mtu: int
    external: bool
    internal: bool
    reserved: list[ipaddress.IPv4Address]
    labels: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, network: Network) -> NetworkOut:
        return cls(**network.model_dump())


# --- containers (endpoints) ---------------------------------------------------------
class EndpointIn(_In):
    name: Name
    network: Name
    host: Name
    ip: str | None = Field(
        default=None, description="Default: lowest free address", examples=["10.1.0.5"]
    )
    mac: str | None = Field(
        default=None, description="Default: 02:da: + the IP's four bytes", examples=[None]
    )


class EndpointPatch(_In):
    name: Name | None = None
    docker_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{12,64}$")
    aliases: list[DnsName] | None = Field(
        default=None, max_length=MAX_ALIASES,
        description="Other names the container resolves by (Docker's --network-alias)",
    )
    hostname: DnsName | Literal[""] | None = Field(
        default=None, description="Docker's --hostname, resolved too (\"\": none)"
    )


class HostTarget(_In):
    host: Name


class EndpointOut(_Out):
    id: str
    name: str
    network: str
    host: str
    ip: ipaddress.IPv4Address
    mac: str
    port: str
    created_at: datetime
    prefixlen: int
    gateway: ipaddress.IPv4Address
    mtu: int
    docker_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    hostname: str | None = None

    @classmethod
    def of(cls, endpoint: Endpoint, network: Network) -> EndpointOut:
        return cls(
            **endpoint.model_dump(),
            prefixlen=network.subnet.prefixlen,
            gateway=network.gateway,
            mtu=network.mtu,
        )


# --- policy -------------------------------------------------------------------------
ContainerRef = Annotated[
    str, Field(min_length=1, max_length=128, description="Container name or id")
]


class GroupIn(_In):
    name: Name
    networks: list[Name] = Field(default_factory=list, max_length=1024)


class GroupMemberIn(_In):
    network: Name


class GroupOut(_Out):
    name: str
    networks: list[str]
    created_at: datetime

    @classmethod
    def of(cls, group: Group) -> GroupOut:
        return cls(**group.model_dump())


AUDIT_HELP = (
    "Audit mode: decides nothing; the connection log records what it would have decided "
    "for each connection it matches (docs/architecture.md, \"Audit mode\")"
)


class AuditPatch(_In):
    """PATCH of a firewall rule or a pair policy: `{"audit": false}` enforces it."""

    audit: StrictBool = Field(description=AUDIT_HELP + "; false: enforce it from now on")


class PairPolicyIn(_In):
    action: Action = Field(description="allow (connect) or deny (disconnect)")
    audit: StrictBool = Field(default=False, description=AUDIT_HELP)


class PairPolicyOut(_Out):
    a: str
    b: str
    action: Action
    audit: bool
    created_at: datetime

    @classmethod
    def of(cls, policy: PairPolicy) -> PairPolicyOut:
        return cls(**policy.model_dump())


class RuleSourceIn(_In):
    kind: SourceKind = "any"
    value: str | None = Field(
        default=None,
        max_length=128,
        description="Container (name or id), network or group name, or an IPv4 CIDR; "
        "empty for any",
        examples=["192.0.2.0/24"],
    )


class RuleSourceOut(_Out):
    kind: SourceKind
    value: str | None


def _port_to_str(value: Any) -> Any:
    """Accept 80 as well as "80" (a huge number stays an int and is refused)."""
    if isinstance(value, int) and not isinstance(value, bool) and -(10**6) < value < 10**6:
        return str(value)
    return value


PortItem = Annotated[
    str,
    BeforeValidator(_port_to_str),
    Field(max_length=16, description='A port or a range: "80", "8000-8100"'),
]


class FirewallRuleIn(_In):
    target_kind: Literal["network", "group"] = Field(description="What the rule protects")
    target: Name
    action: Action
    source: RuleSourceIn = Field(default_factory=RuleSourceIn)
    protocol: Protocol = "any"
    ports: list[PortItem] = Field(
        default_factory=list,
        max_length=32,
        description='Destination ports or ranges ("80", "8000-8100"); empty = every port. '
        "Needs protocol tcp or udp.",
    )
    position: int | None = Field(
        default=None, ge=0, le=100000, description="Insert here (0 = first); default: last"
    )
    audit: StrictBool = Field(default=False, description=AUDIT_HELP)


class FirewallRuleOut(_Out):
    type: Literal["rule"] = "rule"
    id: str
    target_kind: Literal["network", "group"]
    target: str
    position: int
    action: Action
    source: RuleSourceOut
    protocol: Protocol
    ports: list[str]
    audit: bool
    created_at: datetime

    @classmethod
    def of(cls, rule: FirewallRule) -> FirewallRuleOut:
        return cls(**rule.model_dump())


class PublishedPortIn(_In):
    container: ContainerRef
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class ContainerPortIn(_In):
    """A port of the container in the path, published on the host it runs on."""

    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class PublishedPortOut(_Out):
    type: Literal["port"] = "port"
    id: str
    container: str
    protocol: Literal["tcp", "udp"]
    host_port: int
    container_port: int
    host: str | None = Field(description="Host the container runs on now (None: not running)")
    created_at: datetime

    @classmethod
    def of(cls, port: PublishedPort, host: str | None) -> PublishedPortOut:
        return cls(**port.model_dump(), host=host)


class FirewallsOut(_Out):
    rules: list[FirewallRuleOut]
    ports: list[PublishedPortOut]


class TraceEnd(_Out):
    name: str | None = Field(description="Container name (None: outside daolinet)")
    ip: ipaddress.IPv4Address
    network: str | None
    host: str | None


class TraceHop(_Out):
    address: ipaddress.IPv4Address
    host: str | None = Field(description="Host the address is on (None: the destination)")
    kind: Literal["underlay", "tunnel", "relay", "container"] = Field(
        description="A host's underlay or WireGuard tunnel address, a relay's tunnel "
        "address, or the destination container's"
    )


class AuditOut(_Out):
    kind: Literal["pair", "firewall"]
    id: str = Field(description="The firewall rule's id, or the pair policy's a|b")
    would: Action
    reason: str


class TraceOut(_Out):
    verdict: Action
    reason: str
    kind: Literal["pair", "firewall", "network", "group", "default"]
    rule_id: str | None
    port_specific: bool
    src: TraceEnd
    dst: TraceEnd
    proto: Literal["tcp", "udp", "icmp"]
    port: int | None
    path: list[str] = Field(
        description="Addresses the traffic passes (tunnel addresses across sites, the relay's "
        "too), the container last; empty when denied"
    )
    path_kind: str | None = Field(
        default=None,
        description="As GET /routes' path: local, underlay, wireguard, relay:R, or external "
        "(from outside daolinet); None when denied",
    )
    hops: list[TraceHop] = Field(
        default_factory=list, description="The path's addresses and what each is"
    )
    audit: list[AuditOut] = Field(
        default_factory=list,
        description="Rules and pair policies in audit mode that would have decided, and how",
    )


# --- replicas -----------------------------------------------------------------------
class ReplicaOut(_Out):
    name: str
    api: str | None = Field(default=None, description="API URL (--advertise)")
    openflow: str | None = Field(
        default=None, description="OpenFlow target of the switches of its site (or of all)"
    )
    openflow_remote: str | None = Field(
        default=None, description="OpenFlow target of the switches of other sites"
    )
    site: str | None = Field(default=None, description="null: no site, one target for all")
    leader: bool
    member: bool = Field(
        default=True, description="Its membership lasts: it masters the switches assigned to it"
    )
    switches: list[str] = Field(
        default_factory=list, description="Hosts whose switch is assigned to it (sorted)"
    )

    @classmethod
    def of(
        cls,
        record: dict[str, Any],
        leader: str | None,
        member: bool = True,
        switches: list[str] | None = None,
    ) -> ReplicaOut:
        def text(key: str) -> str | None:
            value = record.get(key)
            return str(value) if value else None

        name = str(record.get("name", ""))
        openflow = text("openflow")
        return cls(name=name, api=text("api"), openflow=openflow,
                   openflow_remote=text("openflow_remote") or openflow, site=text("site"),
                   leader=leader is not None and name == leader, member=member,
                   switches=sorted(switches or []))


class ReplicasOut(_Out):
    leader: str | None = Field(description="The leading replica; null during an election")
    generation: int | None = Field(
        description="The leadership's generation (the role requests' generation id)"
    )
    assignment_generation: int | None = Field(
        default=None,
        description="Generation of the switch assignment (the role requests' generation id "
        "with masters spread over replicas); null for the only controller",
    )
    replicas: list[ReplicaOut]
