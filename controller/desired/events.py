"""Desired-state changes the inventory announces to the core.

The policy events (`PairPolicyChanged`, `GroupChanged`, `RulesChanged`,
`NetworkChanged`, `PublishedPortAdded`/`Removed`) are announced after the index
already holds the new state, so a consumer that re-runs `policy.decide()` for its
live connections sees the new verdicts (see docs/architecture.md, "Policy").
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.desired.models import Action, Endpoint, Host, Network, PublishedPort


@dataclass(frozen=True)
class HostRegistered:
    host: Host


@dataclass(frozen=True)
class HostRemoved:
    """A host was removed (`DELETE /hosts/{name}`): announced after the
    `EndpointRemoved` of each of its containers (a forced removal), so the core has
    torn down their connections before it forgets the host's switch."""

    host: Host


@dataclass(frozen=True)
class NetworkAdded:
    network: Network


@dataclass(frozen=True)
class NetworkRemoved:
    network: Network


@dataclass(frozen=True)
class NetworkChanged:
    """A network's options changed (today only `external`)."""

    before: Network
    after: Network


@dataclass(frozen=True)
class EndpointAdded:
    endpoint: Endpoint


@dataclass(frozen=True)
class EndpointRemoved:
    endpoint: Endpoint


@dataclass(frozen=True)
class EndpointRenamed:
    """An endpoint's names changed (its name, aliases or hostname), nothing else:
    no datapath change, but what other containers resolve changes."""

    before: Endpoint
    after: Endpoint


@dataclass(frozen=True)
class PairPolicyChanged:
    """`connect`/`disconnect`/`clear` of containers `a` < `b` (by name).

    `before`/`after` are the pair's action ("allow"/"deny") or None (no policy).
    Affects only connections between `a` and `b`.
    """

    a: str
    b: str
    before: Action | None
    after: Action | None


@dataclass(frozen=True)
class GroupChanged:
    """A group was created, deleted or its members changed.

    `before`/`after` are its member networks (empty when created/deleted).
    Affects connections between networks of `before | after`.
    """

    group: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def networks(self) -> frozenset[str]:
        return frozenset(self.before) | frozenset(self.after)


@dataclass(frozen=True)
class RulesChanged:
    """The firewall rules of one target (a network or a group) changed.

    Affects connections *to* containers of that network, or of the group's networks
    (`networks`, the group's members when the change was made).
    """

    target_kind: str  # "network" | "group"
    target: str
    networks: tuple[str, ...]


@dataclass(frozen=True)
class PublishedPortAdded:
    port: PublishedPort


@dataclass(frozen=True)
class PublishedPortRemoved:
    port: PublishedPort


Change = (
    HostRegistered
    | HostRemoved
    | NetworkAdded
    | NetworkRemoved
    | NetworkChanged
    | EndpointAdded
    | EndpointRemoved
    | EndpointRenamed
    | PairPolicyChanged
    | GroupChanged
    | RulesChanged
    | PublishedPortAdded
    | PublishedPortRemoved
)
