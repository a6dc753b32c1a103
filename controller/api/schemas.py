"""Request and response bodies of the REST API (one schema per direction).

Addresses in requests are plain strings: the inventory parses them, so a bad
value gets a message naming the field and what is wrong with it
("subnet 10.1.0.1/24 has host bits set (did you mean 10.1.0.0/24?)").
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from controller.models import Endpoint, Host, Name, Network


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


class HostOut(_Out):
    name: str
    address: ipaddress.IPv4Address
    site: str
    dpid: int
    registered_at: datetime
    openflow_targets: list[str]

    @classmethod
    def of(cls, host: Host, openflow_targets: list[str]) -> HostOut:
        return cls(**host.model_dump(), openflow_targets=openflow_targets)


# --- networks -----------------------------------------------------------------------
class NetworkIn(_In):
    name: Name
    subnet: str = Field(description="IPv4 CIDR", examples=["10.1.0.0/24"])
    gateway: str | None = Field(
        default=None, description="Default: first address of the subnet", examples=["10.1.0.1"]
    )
    mtu: int | None = Field(default=None, ge=576, le=9000, description="Default: 1500")


class NetworkOut(_Out):
    id: str
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    mtu: int
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

    @classmethod
    def of(cls, endpoint: Endpoint, network: Network) -> EndpointOut:
        return cls(
            **endpoint.model_dump(),
            prefixlen=network.subnet.prefixlen,
            gateway=network.gateway,
            mtu=network.mtu,
        )
