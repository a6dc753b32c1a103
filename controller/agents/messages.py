"""The messages of the agent stream, declared once for both ends (the hub and the host
agent); protocol: docs/architecture.md.

Controller -> agent: `snapshot` (the full route set, always first), `delta`, `nat`
(the whole NAT set), `mesh` (every host's WireGuard facts), `names` (the whole names
table of the host's containers), `command` (a request answered by a `result`).
Agent -> controller: `ack` / `nack` of a numbered message,
`result` of a command.  `wire()` is the JSON object sent: routes and NAT rules
without their null fields, as they always were.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    field_validator,
)

from controller.agents.names import MAX_NAMES, MAX_PEERS, MAX_SOURCES, SourceNames
from controller.desired.models import DnsName, Host, KernelRoute, NatRule


def _without_nulls(record: BaseModel) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude_none=True)


WireRoute = Annotated[KernelRoute, PlainSerializer(_without_nulls, return_type=dict)]
WireNatRule = Annotated[NatRule, PlainSerializer(_without_nulls, return_type=dict)]


class MeshHost(BaseModel):
    """A host as the mesh sees it (the WireGuard fields of controller.desired.models.Host)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    site: str = "default"
    wg_public_key: str | None = None
    wg_endpoint: str | None = None
    tunnel_address: ipaddress.IPv4Address | None = None
    relay: bool = False

    @classmethod
    def of(cls, host: Host) -> MeshHost:
        """The mesh's view of a registered host."""
        return cls.model_validate(host.model_dump())


# Close code of a stream another stream of the same host replaced (the newer one wins:
# the older is most often a connection its agent already gave up, in a reconnect race).
# In the private range beside the route's codes (controller/api/routes/stream.py);
# declared here because the agent acts on it (hostnet/agent/stream.py).
CLOSE_REPLACED = 4409
# Close code of the stream of a host that was removed (`DELETE /api/v1/hosts/{name}`):
# its agent stops and does not register the host again until it is restarted
# (hostnet/agent/stream.py); a restarted agent registers it as a new host.
CLOSE_HOST_REMOVED = 4410

# Close code of a stream this replica does not serve (it does not master the host's
# switch, or it is the only controller and does not lead): the agent tries another
# replica, and first the one the reason names (`not_master_reason`).
CLOSE_NOT_SERVED_HERE = 4503
# RFC 6455 5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
CLOSE_REASON_MAX = 123
_NAMED_MASTER = re.compile(r"; (\S+) is$")


def not_master_reason(host: str, master_api: str | None) -> str:
    """The reason of a 4503 close for `host`'s stream: names the master's API URL (as
    its replica advertises it) so the agent goes there next, within the close
    frame's bound (a long host name is left out first, then the URL)."""
    if master_api is None:
        return _bounded(f"not the master of {host}; no replica is now", "not the master")
    for reason in (f"not the master of {host}; {master_api} is",
                   f"not the master; {master_api} is"):
        if len(reason.encode()) <= CLOSE_REASON_MAX:
            return reason
    return "not the master"


def named_master(reason: str) -> str | None:
    """The master's API URL a 4503 close reason names (`not_master_reason`), if any."""
    match = _NAMED_MASTER.search(reason)
    return match.group(1) if match else None


def _bounded(reason: str, short: str) -> str:
    return reason if len(reason.encode()) <= CLOSE_REASON_MAX else short


class _Message(BaseModel):
    def wire(self) -> dict[str, Any]:
        """The JSON object sent on the stream."""
        return self.model_dump(mode="json")


# --- controller -> agent ---------------------------------------------------------------


class SnapshotMessage(_Message):
    type: Literal["snapshot"] = "snapshot"
    seq: int
    routes: list[WireRoute] = Field(default_factory=list)


class DeltaMessage(_Message):
    type: Literal["delta"] = "delta"
    seq: int
    add: list[WireRoute] = Field(default_factory=list)
    remove: list[WireRoute] = Field(default_factory=list)


class NatMessage(_Message):
    type: Literal["nat"] = "nat"
    seq: int
    rules: list[WireNatRule] = Field(default_factory=list)


class MeshMessage(_Message):
    type: Literal["mesh"] = "mesh"
    seq: int
    hosts: list[MeshHost] = Field(default_factory=list)


class NamedPeer(BaseModel):
    """A container a source may reach: its address and names (container name first)."""

    model_config = ConfigDict(frozen=True)

    ip: ipaddress.IPv4Address
    names: list[DnsName] = Field(min_length=1, max_length=MAX_NAMES)


class SourceTable(BaseModel):
    """What the container at `source` may resolve."""

    model_config = ConfigDict(frozen=True)

    source: ipaddress.IPv4Address
    peers: list[NamedPeer] = Field(default_factory=list, max_length=MAX_PEERS)


class NamesMessage(_Message):
    type: Literal["names"] = "names"
    seq: int
    tables: list[SourceTable] = Field(default_factory=list, max_length=MAX_SOURCES)

    @classmethod
    def of(cls, seq: int, tables: list[SourceNames]) -> NamesMessage:
        return cls(seq=seq, tables=[
            SourceTable(source=t.source,
                        peers=[NamedPeer(ip=p.ip, names=list(p.names)) for p in t.peers])
            for t in tables
        ])


class CommandMessage(_Message):
    type: Literal["command"] = "command"
    seq: int
    op: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("op", mode="before")
    @classmethod
    def _op_text(cls, value: Any) -> str:
        return str(value)

    @field_validator("args", mode="before")
    @classmethod
    def _args_object(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}


# The numbered messages an agent applies and acknowledges.
StateMessage = Annotated[
    SnapshotMessage | DeltaMessage | NatMessage | MeshMessage | NamesMessage,
    Field(discriminator="type"),
]
STATE_MESSAGE: TypeAdapter[
    SnapshotMessage | DeltaMessage | NatMessage | MeshMessage | NamesMessage
] = TypeAdapter(StateMessage)
STATE_KINDS = ("snapshot", "delta", "nat", "mesh", "names")


# --- agent -> controller ---------------------------------------------------------------


class Ack(_Message):
    type: Literal["ack"] = "ack"
    seq: int


class Nack(_Message):
    """A numbered message the agent could not apply (any reply but an ack or a
    result counts as one)."""

    type: str = "nack"
    seq: int
    error: str | None = None


class Result(_Message):
    """The answer to a command: `data` when ok, else `error`."""

    type: Literal["result"] = "result"
    seq: int
    ok: bool
    data: dict[str, Any] | None = None
    error: str | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_reply(message: Any) -> Ack | Nack | Result | None:
    """An agent's reply; None when it carries no sequence number."""
    if not isinstance(message, dict) or not isinstance(message.get("seq"), int):
        return None
    kind = message.get("type")
    if kind == "ack":
        return Ack(seq=message["seq"])
    if kind == "result":
        data = message.get("data")
        error = message.get("error")
        return Result(
            seq=message["seq"], ok=bool(message.get("ok")),
            data=data if isinstance(data, dict) else {},
            error=str(error) if error else None,
        )
    error = message.get("error")
    return Nack(type=str(kind), seq=message["seq"], error=None if error is None else str(error))
