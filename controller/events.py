"""Desired-state changes the inventory announces to the core."""

from __future__ import annotations

from dataclasses import dataclass

from controller.models import Endpoint, Host, Network


@dataclass(frozen=True)
class HostRegistered:
    host: Host


@dataclass(frozen=True)
class NetworkAdded:
    network: Network


@dataclass(frozen=True)
class NetworkRemoved:
    network: Network


@dataclass(frozen=True)
class EndpointAdded:
    endpoint: Endpoint


@dataclass(frozen=True)
class EndpointRemoved:
    endpoint: Endpoint


Change = HostRegistered | NetworkAdded | NetworkRemoved | EndpointAdded | EndpointRemoved
