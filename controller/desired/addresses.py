"""The rules every IPv4 value of daolinet obeys, as pure checks (the standard library
and `Invalid` only; docs/security.md, "Validation").

One home for them, shared by the records (models.py: a stored record that breaks a
rule does not decode, so the load sees the same rule as the API), the changes
(validation.py parses what a client sends, topology.py adds the checks that need the
current state) and the host agent (hostnet/host/wireguard.py checks every endpoint
before `wg set` sees it).  Each check raises `Invalid` with a message that names the
field and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar

from controller.desired.errors import Invalid

T = TypeVar("T")
IPv4 = ipaddress.IPv4Address
IPv4Net = ipaddress.IPv4Network

# A network's prefix length: /8 at most (a larger network would cover special ranges or
# much of the internet, and nobody runs 16 million containers in one), /30 at least
# (room for the gateway and one container).
MIN_PREFIX, MAX_PREFIX = 8, 30

_NOT_THIS_NETWORK = (IPv4Net("0.0.0.0/8"), "'this network'")
_LOOPBACK = (IPv4Net("127.0.0.0/8"), "loopback")
_LINK_LOCAL = (IPv4Net("169.254.0.0/16"), "link-local")
_MULTICAST = (IPv4Net("224.0.0.0/4"), "multicast")
_RESERVED = (IPv4Net("240.0.0.0/4"), "reserved and broadcast")

# Where no container may be: addresses no unicast packet between two containers
# carries.  A host may be on loopback (one-machine labs) or link-local, never on the
# others.
CONTAINER_FORBIDDEN = (_NOT_THIS_NETWORK, _LOOPBACK, _LINK_LOCAL, _MULTICAST, _RESERVED)
HOST_FORBIDDEN = (_NOT_THIS_NETWORK, _MULTICAST, _RESERVED)

# IPv4:PORT in ASCII digits ([0-9], not \d), port without a sign or leading zero:
# int() and ipaddress alone would take '5_1820', '+51820' or non-ASCII digits, and
# `wg set` would try to resolve as a name what it cannot parse.
_ENDPOINT = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([1-9][0-9]{0,4})")


def check_subnet(field: str, subnet: IPv4Net) -> IPv4Net:
    """A network's subnet: /MIN_PREFIX to /MAX_PREFIX, clear of every special range."""
    if subnet.prefixlen < MIN_PREFIX:
        raise Invalid(f"{field} {subnet} is too large: use /{MIN_PREFIX} or smaller")
    if subnet.prefixlen > MAX_PREFIX:
        raise Invalid(
            f"{field} {subnet} leaves no room for a gateway and containers: "
            f"use /{MAX_PREFIX} or larger"
        )
    for special, name in CONTAINER_FORBIDDEN:
        if subnet.overlaps(special):
            raise Invalid(f"{field} {subnet} overlaps the {name} range {special}")
    return subnet


def check_container_address(field: str, addr: IPv4) -> IPv4:
    """An address a container may have: unicast, not loopback nor link-local."""
    return _check_outside(field, addr, CONTAINER_FORBIDDEN)


def check_host_address(field: str, addr: IPv4) -> IPv4:
    """A host's underlay or tunnel address, or an endpoint's: one a packet can be sent to."""
    return _check_outside(field, addr, HOST_FORBIDDEN)


def _check_outside(field: str, addr: IPv4, ranges: tuple[tuple[IPv4Net, str], ...]) -> IPv4:
    for special, name in ranges:
        if addr in special:
            raise Invalid(f"{field} {addr} is in the {name} range {special}")
    return addr


def check_gateway(field: str, gateway: IPv4, subnet: IPv4Net) -> IPv4:
    """A network's gateway: inside its subnet, not its network or broadcast address."""
    if gateway not in subnet:
        raise Invalid(f"{field} {gateway} is outside subnet {subnet}")
    if gateway == subnet.network_address:
        raise Invalid(f"{field} {gateway} is the network address of subnet {subnet}")
    if gateway == subnet.broadcast_address:
        raise Invalid(f"{field} {gateway} is the broadcast address of subnet {subnet}")
    return gateway


def check_endpoint(field: str, endpoint: str) -> str:
    """A WireGuard endpoint: exactly IPv4:PORT in ASCII digits, port 1-65535."""
    match = _ENDPOINT.fullmatch(endpoint)
    ip = _ipv4(match[1]) if match is not None else None
    if match is None or ip is None or int(match[2]) > 65535:
        raise Invalid(f"{field} {endpoint!r} is not IPv4:PORT (e.g. 198.51.100.7:51820)")
    check_host_address(field, ip)
    return endpoint


def _ipv4(text: str) -> IPv4 | None:
    try:
        return IPv4(text)  # refuses octets above 255 and leading zeros
    except ValueError:
        return None


def usable_endpoint(endpoint: str | None) -> str | None:
    """`endpoint` if it passes `check_endpoint`, else None (a peer one cannot send to)."""
    if endpoint is None:
        return None
    try:
        return check_endpoint("endpoint", endpoint)
    except Invalid:
        return None


def field_check(check: Callable[[str, T], T], field: str) -> Callable[[T], T]:
    """`check` for one field as a pydantic validator: `Invalid` becomes the ValueError
    pydantic reports for that field (models.py, the agent's provisioning file)."""

    def run(value: T) -> T:
        try:
            return check(field, value)
        except Invalid as exc:
            raise ValueError(exc.message) from None

    return run
