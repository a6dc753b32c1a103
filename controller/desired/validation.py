"""Checks of the values a change brings: names, addresses, subnets, MACs, ports.

Pure functions of their arguments (no store, no index): each returns the value in
its normal form or raises `Invalid` with a message naming the field and the value,
so a client learns what to fix.  The rules of addresses themselves live in
addresses.py (the records check them too); here a client's text becomes a value that
obeys them.  The checks that need the current state (is the name free, is the address
used, does a subnet hold a host's address) stay with the changes (topology.py,
policy_changes.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.desired.addresses import (
    check_container_address,
    check_endpoint,
    check_gateway,
    check_host_address,
    check_subnet,
)
from controller.desired.errors import Invalid
from controller.desired.models import (
    GATEWAY_MAC,
    MAX_LABELS,
    MAX_RESERVED,
    LabelKey,
    LabelValue,
    MacAddress,
    Name,
    Network,
)

MTU_MIN, MTU_MAX, MTU_DEFAULT = 576, 9000, 1500
MAX_PORTS = 32

_name_adapter: TypeAdapter[str] = TypeAdapter(Name)
_mac_adapter: TypeAdapter[str] = TypeAdapter(MacAddress)

_WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def check_name(field: str, value: str) -> str:
    try:
        return _name_adapter.validate_python(value)
    except ValidationError:
        raise Invalid(
            f"{field} {value!r} is invalid: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        ) from None


def check_action(action: str) -> None:
    """The action of a pair policy or a firewall rule."""
    if action not in ("allow", "deny"):
        raise Invalid(f"action {action!r} must be allow or deny")


def check_audit(audit: object) -> None:
    """A rule's or pair policy's `audit` flag: a boolean, nothing that reads as one."""
    if not isinstance(audit, bool):
        raise Invalid(f"audit {audit!r} must be true or false")


def check_wireguard(
    public_key: str | None,
    endpoint: str | None,
    tunnel: str | ipaddress.IPv4Address | None,
    relay: bool,
) -> dict[str, Any]:
    """The WireGuard fields of a host registration, checked (all optional)."""
    out: dict[str, Any] = {"relay": relay}
    if public_key is not None:
        if not _WG_KEY.match(public_key):
            raise Invalid(f"wg_public_key {public_key!r} is not a WireGuard public key")
        out["wg_public_key"] = public_key
    if endpoint is not None:
        out["wg_endpoint"] = check_endpoint("wg_endpoint", endpoint)
    if tunnel is not None:
        tunnel = parse_address("tunnel_address", tunnel)
        out["tunnel_address"] = check_host_address("tunnel_address", tunnel)
    return out


def parse_address(field: str, value: str | ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise Invalid(f"{field} {value!r} is not an IPv4 address") from None


def parse_underlay_address(value: str | ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    """A host's underlay address: one a tunnel can be sent to."""
    return check_host_address("address", parse_address("address", value))


def parse_subnet(value: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        subnet = value
    else:
        text = str(value).strip()
        if "/" not in text:
            raise Invalid(f"subnet {value!r} is not an IPv4 CIDR (expected e.g. 10.1.0.0/24)")
        try:
            subnet = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                try:
                    fixed = ipaddress.IPv4Network(text, strict=False)
                except ValueError:  # pragma: no cover - strict failed only on host bits
                    fixed = None
                hint = f" (did you mean {fixed}?)" if fixed is not None else ""
                raise Invalid(f"subnet {text} has host bits set{hint}") from None
            raise Invalid(
                f"subnet {value!r} is not an IPv4 CIDR (expected e.g. 10.1.0.0/24)"
            ) from None
    return check_subnet("subnet", subnet)


def parse_gateway(
    subnet: ipaddress.IPv4Network, gateway: str | ipaddress.IPv4Address | None
) -> ipaddress.IPv4Address:
    """A network's gateway: the first address of its subnet unless one is given."""
    if gateway is None or gateway == "":
        return subnet.network_address + 1
    return check_gateway("gateway", parse_address("gateway", gateway), subnet)


def check_mtu(mtu: int | None) -> int:
    """A network's MTU (default MTU_DEFAULT)."""
    if mtu is None:
        mtu = MTU_DEFAULT
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise Invalid(f"mtu {mtu} is out of range {MTU_MIN}-{MTU_MAX}")
    return mtu


def parse_reserved(
    subnet: ipaddress.IPv4Network, values: Sequence[str | ipaddress.IPv4Address]
) -> tuple[ipaddress.IPv4Address, ...]:
    """A network's reserved addresses (Docker's aux addresses): inside the subnet,
    neither its network nor its broadcast address, at most MAX_RESERVED; sorted, once."""
    if len(values) > MAX_RESERVED:
        raise Invalid(f"reserved: at most {MAX_RESERVED} addresses, not {len(values)}")
    found: set[ipaddress.IPv4Address] = set()
    for value in values:
        addr = parse_address("reserved", value)
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise Invalid(f"reserved address {addr} is not a host address of subnet {subnet}")
        found.add(addr)
    return tuple(sorted(found))


_labels_adapter: TypeAdapter[dict[LabelKey, LabelValue]] = TypeAdapter(
    dict[LabelKey, LabelValue]
)


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """A network's labels: at most MAX_LABELS, keys of 1-128 printable ASCII characters
    without spaces, values of at most 1024 characters without control characters."""
    if len(labels) > MAX_LABELS:
        raise Invalid(f"labels: at most {MAX_LABELS}, not {len(labels)}")
    try:
        return dict(_labels_adapter.validate_python(labels))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        where = f"key {loc[0]!r}" if loc[-1:] == ("[key]",) else f"value of {loc[0]!r}"
        raise Invalid(f"labels: {where}: {first['msg']}") from None


def check_container_ip(net: Network, addr: ipaddress.IPv4Address) -> None:
    """An address a container of `net` may have (not its network, broadcast or gateway;
    the subnet's rules keep it clear of loopback, multicast and the like)."""
    check_container_address("ip", addr)
    if addr not in net.subnet:
        raise Invalid(f"ip {addr} is outside subnet {net.subnet} of network {net.name}")
    if addr == net.subnet.network_address:
        raise Invalid(f"ip {addr} is the network address of subnet {net.subnet}")
    if addr == net.subnet.broadcast_address:
        raise Invalid(f"ip {addr} is the broadcast address of subnet {net.subnet}")
    if addr == net.gateway:
        raise Invalid(f"ip {addr} is the gateway of network {net.name}")


def parse_mac(value: str) -> str:
    try:
        mac = _mac_adapter.validate_python(str(value).strip().lower())
    except ValidationError:
        raise Invalid(
            f"mac {value!r} is not a MAC address (expected e.g. 02:da:0a:01:00:05)"
        ) from None
    if mac == GATEWAY_MAC:
        raise Invalid(f"mac {mac} is the virtual gateway MAC")
    if int(mac[:2], 16) & 1:
        raise Invalid(f"mac {mac} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise Invalid(f"mac {mac} is the all-zero address")
    return mac


def parse_cidr(field: str, value: str) -> ipaddress.IPv4Network:
    """An IPv4 CIDR (a bare address is a /32); host bits are refused with a hint."""
    text = str(value).strip()
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.IPv4Network(text, strict=False)
            raise Invalid(f"{field} {text} has host bits set (did you mean {fixed}?)") from None
        raise Invalid(
            f"{field} {value!r} is not an IPv4 address or CIDR (expected e.g. 192.0.2.0/24)"
        ) from None


def check_port(field: str, value: object) -> None:
    """One port number (1-65535; a bool is no port)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"{field} {value!r} is not a port (1-65535)")


def parse_ports(ports: Sequence[str | int]) -> tuple[str, ...]:
    """Ports and ranges ("80", 443, "8000-8100"), checked and normalised, in order."""
    if isinstance(ports, str | int):
        ports = [ports]
    if len(ports) > MAX_PORTS:
        raise Invalid(f"ports has {len(ports)} entries, at most {MAX_PORTS} are allowed")
    found: list[str] = []
    for item in ports:
        text = str(item).strip()
        lo_text, dash, hi_text = text.partition("-")
        try:
            if isinstance(item, bool):
                raise ValueError
            lo = int(lo_text, 10)
            hi = int(hi_text, 10) if dash else lo
            if not _ascii_digits(lo_text) or (dash and not _ascii_digits(hi_text)):
                raise ValueError
        except ValueError:
            raise Invalid(
                f"ports entry {item!r} is not a port or a range (expected e.g. 80 or 8000-8100)"
            ) from None
        if not 1 <= lo <= 65535 or not 1 <= hi <= 65535:
            raise Invalid(f"ports entry {text!r} is out of range 1-65535")
        if lo > hi:
            raise Invalid(f"ports entry {text!r} is an empty range (start above end)")
        norm = str(lo) if lo == hi else f"{lo}-{hi}"
        if norm not in found:
            found.append(norm)
    return tuple(found)


def _ascii_digits(text: str) -> bool:
    """Digits 0-9 only: str.isdigit() and int() also take '٨٠' and other scripts."""
    return text.isascii() and text.isdigit()
