"""Attach a container's network namespace to daolinet, and detach it.

The steps and their undo (every failure undoes all earlier steps, in reverse):

1. the netns must exist                         (400, nothing to undo)
2. `POST /containers` at the controller          undo: `DELETE /containers/{id}`
3. veth ENDPOINT.PORT <-> temporary peer         undo: delete the veth
4. peer into the netns, renamed/configured, host side MTU + up
5. OVS port with daolinet external_ids           (the last step: nothing after it fails)

Steps 3-5 are the port plumbing the Docker plugin shares (hostnet/host/ports.py).
Host-side work is synchronous (pyroute2/ovs-vsctl) and runs in a worker thread.
"""

from __future__ import annotations

import ipaddress
import logging
from concurrent.futures import Executor
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hostnet.agent.client import ControllerAPI, ControllerError, EndpointInfo
from hostnet.host import netlink
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import CONTAINER_KEY, ENDPOINT_KEY, OvsError
from hostnet.host.ports import PortOps, SystemPortOps, peer_temp_name, plug, unplug
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)


class AttachError(Exception):
    """An attach/detach failure with the HTTP status the local API answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AttachRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    netns: str = Field(min_length=1, max_length=255)
    network: str = Field(min_length=1, max_length=63)
    name: str | None = Field(default=None, min_length=1, max_length=63)
    ip: str | None = None
    mac: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
    ifname: str = Field(default="eth0", min_length=1, max_length=15)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return str(ipaddress.IPv4Address(v))


class DetachRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)


class HostOps(PortOps, Protocol):
    """The host-side steps of an attachment (synchronous, run in a worker thread)."""

    def netns_exists(self, name: str) -> bool: ...

    def setup_container_side(
        self, peer_name: str, netns: str, ifname: str, *, mac: str, mtu: int, ip: str,
        prefixlen: int, gateway: str | None,
    ) -> None: ...


class SystemHostOps(SystemPortOps):
    """HostOps on the real host: the port steps, plus the netns side of the veth."""

    def netns_exists(self, name: str) -> bool:
        return netlink.netns_exists(name)

    def setup_container_side(
        self, peer_name: str, netns: str, ifname: str, *, mac: str, mtu: int, ip: str,
        prefixlen: int, gateway: str | None,
    ) -> None:
        netlink.move_to_netns(peer_name, netns)
        netlink.configure_container_side(
            netns, peer_name, new_name=ifname, mac=mac, mtu=mtu, ip=ip,
            prefixlen=prefixlen, gateway=gateway,
        )
        if self.disable_offload:
            netlink.disable_tx_offload(netns, ifname)


class Attacher:
    def __init__(
        self,
        host: str,
        controller: ControllerAPI,
        ops: HostOps,
        *,
        executor: Executor | None = None,
    ) -> None:
        self.host = host
        self.controller = controller
        self.ops = ops
        self.executor = executor

    async def attach(self, req: AttachRequest) -> dict[str, Any]:
        """Attach `req.netns`; the controller's endpoint record on success."""
        if not await in_thread(self.executor, self.ops.netns_exists, req.netns):
            raise AttachError(400, f"network namespace {req.netns} does not exist")
        name = req.name or req.netns
        try:
            record = await self.controller.create_container(
                name=name, network=req.network, host=self.host, ip=req.ip, mac=req.mac
            )
        except ControllerError as exc:
            raise AttachError(exc.status, exc.detail) from exc

        try:
            try:
                ep = EndpointInfo.model_validate(record)
            except ValidationError as exc:
                raise AttachError(502, f"unexpected endpoint record: {exc}") from exc
            if not netlink.valid_ifname(ep.port):
                raise AttachError(502, f"controller gave an invalid port name {ep.port!r}")
            peer = peer_temp_name(ep.id)

            def into_netns() -> None:
                self.ops.setup_container_side(
                    peer, req.netns, req.ifname, mac=ep.mac, mtu=ep.mtu, ip=ep.ip,
                    prefixlen=ep.prefixlen, gateway=ep.gateway,
                )

            await in_thread(
                self.executor, plug, self.ops, ep.port, peer, ep.mtu,
                {ENDPOINT_KEY: ep.id, CONTAINER_KEY: ep.name}, into_netns,
            )
        except BaseException as exc:
            await self._forget(str(record.get("id", name)))
            if isinstance(exc, AttachError):
                raise
            if isinstance(exc, NetlinkError | OvsError):
                raise AttachError(500, f"attach {name}: {exc}") from exc
            raise
        log.info("attached %s (netns %s) ip=%s port=%s", ep.name, req.netns, ep.ip, ep.port)
        return record

    async def _forget(self, endpoint: str) -> None:
        """Undo the controller's record of a failed attachment (the last undo step)."""
        try:
            await self.controller.delete_container(endpoint)
        except Exception as exc:
            log.error("rollback: delete endpoint at the controller failed: %s", exc)

    async def detach(self, name: str) -> dict[str, Any]:
        """Remove the endpoint `name` (this host's) locally, then at the controller."""
        try:
            record = await self.controller.get_container(name)
            ep = EndpointInfo.model_validate(record)
        except ControllerError as exc:
            raise AttachError(exc.status, exc.detail) from exc
        except ValidationError as exc:
            raise AttachError(502, f"unexpected endpoint record: {exc}") from exc
        if ep.host != self.host:
            raise AttachError(
                409, f"container {name} is attached on host {ep.host}, not on {self.host}"
            )
        try:
            await in_thread(self.executor, unplug, self.ops, ep.port)
        except (NetlinkError, OvsError) as exc:
            raise AttachError(500, f"detach {name}: {exc}") from exc
        try:
            await self.controller.delete_container(ep.id)
        except ControllerError as exc:
            if exc.status != 404:
                raise AttachError(exc.status, exc.detail) from exc
        log.info("detached %s (port %s)", ep.name, ep.port)
        return {"detached": name}
