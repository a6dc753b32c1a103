"""Every privileged netlink call of the host agent (pyroute2), plus sysctls.

pyroute2 0.9's synchronous `IPRoute` runs its own asyncio loop, so these functions
must not be called from a thread that runs an event loop: the agent calls them
through a worker thread.  Every failure becomes a `NetlinkError` with a one-line
message naming the operation and the object.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import config as _pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

# pyroute2 enters a named netns through a forked child that it ends with SIGTERM.
# The child inherits the agent's asyncio signal wake-up fd, so without this the
# child's SIGTERM is delivered to the agent's loop and stops the agent.
_pyroute2_config.disable_mp_signal = True

NETNS_DIR = "/run/netns"
IFNAME_MAX = 15
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,255}$")


class NetlinkError(RuntimeError):
    """A netlink (or sysctl/ethtool) operation failed; the message is one line."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _PyNetlinkError):
        code = exc.code
        text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn pyroute2/OS errors raised inside the block into NetlinkError(what: reason)."""
    try:
        yield
    except NetlinkError:
        raise
    except (_PyNetlinkError, OSError, ValueError, KeyError, IndexError) as exc:
        raise NetlinkError(f"{what}: {_describe(exc)}") from exc


def netlink_code(exc: BaseException) -> int | None:
    """errno of a pyroute2 NetlinkError (or of the one it was translated from)."""
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, _PyNetlinkError):
            code = cur.code
            return code if isinstance(code, int) else None
        cur = cur.__cause__
    return None


def valid_ifname(name: str) -> bool:
    return 0 < len(name) <= IFNAME_MAX and "/" not in name and not any(c.isspace() for c in name)


def netns_exists(name: str) -> bool:
    """True if a named network namespace `name` exists under /run/netns."""
    if not _NETNS_NAME.match(name) or name in (".", ".."):
        return False
    return os.path.isfile(os.path.join(NETNS_DIR, name))


@contextlib.contextmanager
def iproute(netns: str | None = None) -> Iterator[Any]:
    """An IPRoute socket in the host namespace or in the named `netns` (never created)."""
    if netns is not None and not netns_exists(netns):
        raise NetlinkError(f"network namespace {netns} does not exist")
    where = f"netns {netns}" if netns else "host namespace"
    with translate(f"open netlink socket in {where}"):
        ipr = IPRoute(netns=netns, flags=0) if netns is not None else IPRoute()
    try:
        yield ipr
    finally:
        with contextlib.suppress(Exception):
            ipr.close()


def link_index(ipr: Any, name: str) -> int | None:
    """Index of the link called `name` on that socket's namespace, None if absent."""
    with translate(f"look up link {name}"):
        found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _require_index(ipr: Any, name: str, where: str = "") -> int:
    idx = link_index(ipr, name)
    if idx is None:
        suffix = f" in {where}" if where else ""
        raise NetlinkError(f"link {name} does not exist{suffix}")
    return idx


def link_exists(name: str, netns: str | None = None) -> bool:
    with iproute(netns) as ipr:
        return link_index(ipr, name) is not None


def create_veth(host_name: str, peer_temp_name: str, mtu: int | None = None) -> None:
    """Create a veth pair `host_name` <-> `peer_temp_name` in the host namespace."""
    for n in (host_name, peer_temp_name):
        if not valid_ifname(n):
            raise NetlinkError(f"invalid interface name {n!r} (1-{IFNAME_MAX} characters)")
    kwargs: dict[str, Any] = {"ifname": host_name, "kind": "veth"}
    peer: dict[str, Any] = {"ifname": peer_temp_name}
    if mtu is not None:
        kwargs["mtu"] = mtu
        peer["mtu"] = mtu
    kwargs["peer"] = peer
    with iproute() as ipr, translate(f"create veth {host_name}/{peer_temp_name}"):
        ipr.link("add", **kwargs)


def move_to_netns(ifname: str, netns: str) -> None:
    """Move the host-namespace link `ifname` into the named namespace."""
    if not netns_exists(netns):
        raise NetlinkError(f"network namespace {netns} does not exist")
    with iproute() as ipr:
        idx = _require_index(ipr, ifname)
        with translate(f"move {ifname} to netns {netns}"):
            ipr.link("set", index=idx, net_ns_fd=netns)


def configure_container_side(
    netns: str,
    ifname: str,
    *,
    new_name: str | None = "eth0",
    mac: str,
    mtu: int,
    ip: str,
    prefixlen: int,
    gateway: str | None,
) -> None:
    """Inside `netns`: rename, set MAC/MTU, address, up, lo up, default route."""
    target = new_name or ifname
    with iproute(netns) as ipr:
        idx = _require_index(ipr, ifname, f"netns {netns}")
        if new_name and new_name != ifname:
            if link_index(ipr, new_name) is not None:
                raise NetlinkError(f"link {new_name} already exists in netns {netns}")
            with translate(f"rename {ifname} to {new_name} in netns {netns}"):
                ipr.link("set", index=idx, ifname=new_name)
        with translate(f"set MAC {mac} / MTU {mtu} on {target} in netns {netns}"):
            ipr.link("set", index=idx, address=mac, mtu=mtu)
        with translate(f"add address {ip}/{prefixlen} to {target} in netns {netns}"):
            ipr.addr("replace", index=idx, address=ip, prefixlen=prefixlen)
        with translate(f"set {target} up in netns {netns}"):
            ipr.link("set", index=idx, state="up")
        lo = link_index(ipr, "lo")
        if lo is not None:
            with translate(f"set lo up in netns {netns}"):
                ipr.link("set", index=lo, state="up")
        if gateway:
            with translate(f"default route via {gateway} in netns {netns}"):
                ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=idx)


def disable_tx_offload(netns: str | None, ifname: str, timeout: float = 10.0) -> None:
    """`ethtool -K IF tx off` inside `netns` (None: the host namespace); TCP stalls
    on the OVS netdev datapath otherwise.  Set on a veth end in the host namespace,
    the setting survives its move into a container."""
    where = f" in netns {netns}" if netns is not None else ""
    cmd = ["ethtool", "-K", ifname, "tx", "off"]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetlinkError(f"ethtool -K {ifname} tx off{where}: {exc}") from exc
    if proc.returncode != 0:
        msg = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
        raise NetlinkError(f"ethtool -K {ifname} tx off{where}: {msg}")


def set_link_up(name: str, mtu: int | None = None, netns: str | None = None) -> None:
    with iproute(netns) as ipr:
        idx = _require_index(ipr, name)
        if mtu is not None:
            with translate(f"set MTU {mtu} on {name}"):
                ipr.link("set", index=idx, mtu=mtu)
        with translate(f"set {name} up"):
            ipr.link("set", index=idx, state="up")


def wait_for_link(name: str, timeout: float = 10.0, netns: str | None = None) -> None:
    """Wait until link `name` exists (OVS creates a bridge's interface asynchronously)."""
    deadline = time.monotonic() + timeout
    with iproute(netns) as ipr:
        while link_index(ipr, name) is None:
            if time.monotonic() >= deadline:
                raise NetlinkError(f"link {name} did not appear within {timeout:g}s")
            time.sleep(0.05)


def delete_link(name: str, netns: str | None = None) -> bool:
    """Delete a link (a veth takes its peer along); False if it was already absent."""
    with iproute(netns) as ipr:
        idx = link_index(ipr, name)
        if idx is None:
            return False
        try:
            with translate(f"delete link {name}"):
                ipr.link("del", index=idx)
        except NetlinkError as exc:
            if netlink_code(exc) == 19:  # ENODEV: gone meanwhile
                return False
            raise
    return True


RT_SCOPE_HOST = 254  # rtnetlink's scope of an address valid on this host only


def ensure_local_address(address: str, link: str = "lo") -> None:
    """`address`/32 on `link` (idempotent): the name responder's address
    (docs/architecture.md, "Names across hosts").  On the loopback link: a dummy link
    needs the `dummy` kernel module, which not every host (or container) has."""
    with iproute() as ipr:
        idx = _require_index(ipr, link)
        with translate(f"read the addresses of {link}"):
            held = {a.get_attr("IFA_ADDRESS"): a["scope"]
                    for a in ipr.get_addr(index=idx, family=2)}
        if held.get(address) == RT_SCOPE_HOST:
            return
        if address in held:  # added by an earlier agent with scope global
            with translate(f"delete {address}/32 from {link}"):
                ipr.addr("del", index=idx, address=address, prefixlen=32)
        # Scope host: the kernel never picks it as the source of what the host sends
        # (ICMP errors to a container through br-dl, which has no address of its own,
        # took it, and the containers' traceroute lost its first hop); the responder
        # still answers from it, bound to it.
        with translate(f"add {address}/32 to {link}"):
            ipr.addr("add", index=idx, address=address, prefixlen=32, scope=RT_SCOPE_HOST)


def source_address_for(dst: str) -> str:
    """The source address the kernel would use to reach `dst`."""
    ipaddress.IPv4Address(dst)
    with iproute() as ipr, translate(f"route get {dst}"):
        routes = ipr.route("get", dst=dst)
    for r in routes:
        src = r.get("prefsrc") or r.get_attr("RTA_PREFSRC")
        if src:
            return str(src)
    raise NetlinkError(f"route get {dst}: the kernel gave no source address")


def sysctl_settings(bridge: str) -> dict[str, str]:
    """The sysctls a daolinet host needs (path relative to /proc/sys -> value)."""
    settings = {"net/ipv4/ip_forward": "1"}
    for dev in ("all", "default", bridge):
        settings[f"net/ipv4/conf/{dev}/rp_filter"] = "0"
        settings[f"net/ipv4/conf/{dev}/send_redirects"] = "0"
    return settings


def set_sysctls(bridge: str, proc_sys: str = "/proc/sys") -> None:
    """ip_forward=1; rp_filter=0 and send_redirects=0 on all/default/bridge."""
    for rel, value in sysctl_settings(bridge).items():
        path = Path(proc_sys) / rel
        try:
            if path.read_text().strip() == value:
                continue
            path.write_text(value + "\n")
        except OSError as exc:
            raise NetlinkError(f"sysctl {rel.replace('/', '.')}={value}: {_describe(exc)}") from exc
