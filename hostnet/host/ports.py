"""A container's port on the bridge: veth pair + OVS port, made and undone as one.

The local attach (hostnet/host/attach.py) and the Docker plugin
(hostnet/docker/driver.py) plug a container the same way; they differ only in what
happens to the container end of the veth before the host end goes up (attach moves
and configures it in the netns; Docker moves it itself, so only its tx offload is
set here).  Every failure undoes the earlier steps, in reverse.  Synchronous: run it
in the host worker thread (hostnet/host/worker.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Protocol

from hostnet.host import netlink
from hostnet.host.ovs import Ovs

log = logging.getLogger(__name__)


class PortOps(Protocol):
    """The host-side steps of a container port."""

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None: ...

    def host_side_up(self, name: str, mtu: int) -> None: ...

    def add_port(self, port: str, external_ids: dict[str, str]) -> None: ...

    def del_port(self, port: str) -> None: ...

    def delete_link(self, name: str) -> None: ...


class SystemPortOps:
    """PortOps on the real host: pyroute2 for links, ovs-vsctl for the bridge.

    `tx_offload_off`: turn TX checksum offload off on the container end (the netdev
    datapath stalls TCP otherwise)."""

    def __init__(self, ovs: Ovs, bridge: str, *, tx_offload_off: bool = True) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.disable_offload = tx_offload_off

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None:
        netlink.delete_link(peer_name)  # a temporary peer left by a crash is ours
        netlink.create_veth(host_name, peer_name, mtu)

    def host_side_up(self, name: str, mtu: int) -> None:
        netlink.set_link_up(name, mtu=mtu)

    def add_port(self, port: str, external_ids: dict[str, str]) -> None:
        self.ovs.add_port(self.bridge, port, external_ids)

    def del_port(self, port: str) -> None:
        self.ovs.del_port(self.bridge, port)

    def delete_link(self, name: str) -> None:
        netlink.delete_link(name)


def peer_temp_name(endpoint_id: str) -> str:
    """A host-namespace name for the container end before it moves (<= 15 chars)."""
    return "dlt" + hashlib.sha1(endpoint_id.encode()).hexdigest()[:10]


def plug(
    ops: PortOps,
    port: str,
    peer: str,
    mtu: int,
    external_ids: dict[str, str],
    prepare_peer: Callable[[], None],
) -> None:
    """veth `port` <-> `peer`, `prepare_peer()`, `port` up, OVS port `port`.

    On failure the veth goes again (taking the container end along) and the error
    is raised; the OVS port needs no undo, being the last step."""
    ops.create_veth(port, peer, mtu)
    try:
        prepare_peer()
        ops.host_side_up(port, mtu)
        ops.add_port(port, external_ids)
    except BaseException:
        try:
            ops.delete_link(port)
        except Exception as exc:
            log.error("rollback: delete veth %s failed: %s", port, exc)
        raise


def unplug(ops: PortOps, port: str) -> None:
    """Remove the OVS port `port` and its veth (both may already be gone)."""
    ops.del_port(port)
    ops.delete_link(port)
