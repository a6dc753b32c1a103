"""Attach a container's network namespace to daolinet, and detach it.

The steps and their undo (every failure undoes all earlier steps, in reverse):

1. the netns must exist                         (400, nothing to undo)
2. `POST /containers` at the controller          undo: `DELETE /containers/{id}`
3. veth ENDPOINT.PORT <-> temporary peer         undo: delete the veth
4. peer into the netns, renamed/configured, host side MTU + up
5. OVS port with daolinet external_ids           undo: delete the port

Host-side work is synchronous (pyroute2/ovs-vsctl) and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hostnet.agent.client import ControllerError, EndpointInfo
from hostnet.host import netlink
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import CONTAINER_KEY, ENDPOINT_KEY, Ovs, OvsError

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class ControllerAPI(Protocol):
    async def create_container(
        self, *, name: str, network: str, host: str, ip: str | None, mac: str | None
    ) -> dict[str, Any]: ...

    async def get_container(self, name_or_id: str) -> dict[str, Any]: ...

    async def delete_container(self, name_or_id: str) -> None: ...


class HostOps(Protocol):
    """The host-side steps of an attachment (synchronous, run in a worker thread)."""

    def netns_exists(self, name: str) -> bool: ...

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None: ...

    def setup_container_side(
        self, peer_name: str, netns: str, ifname: str, *, mac: str, mtu: int, ip: str,
        prefixlen: int, gateway: str | None,
    ) -> None: ...

    def host_side_up(self, name: str, mtu: int) -> None: ...

    def add_port(self, port: str, external_ids: dict[str, str]) -> None: ...

    def del_port(self, port: str) -> None: ...

    def delete_link(self, name: str) -> None: ...


class SystemHostOps:
    """HostOps on the real host: pyroute2 for links, ovs-vsctl for the bridge."""

    def __init__(self, ovs: Ovs, bridge: str, *, tx_offload_off: bool = True) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.tx_offload_off = tx_offload_off

    def netns_exists(self, name: str) -> bool:
        return netlink.netns_exists(name)

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None:
        netlink.delete_link(peer_name)  # a temporary peer left by a crash is ours
        netlink.create_veth(host_name, peer_name, mtu)

    def setup_container_side(
        self, peer_name: str, netns: str, ifname: str, *, mac: str, mtu: int, ip: str,
        prefixlen: int, gateway: str | None,
    ) -> None:
        netlink.move_to_netns(peer_name, netns)
        netlink.configure_container_side(
            netns, peer_name, new_name=ifname, mac=mac, mtu=mtu, ip=ip,
            prefixlen=prefixlen, gateway=gateway,
        )
        if self.tx_offload_off:
            netlink.disable_tx_offload(netns, ifname)

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

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def attach(self, req: AttachRequest) -> dict[str, Any]:
        """Attach `req.netns`; the controller's endpoint record on success."""
        if not await self._run(self.ops.netns_exists, req.netns):
            raise AttachError(400, f"network namespace {req.netns} does not exist")
        name = req.name or req.netns
        try:
            record = await self.controller.create_container(
                name=name, network=req.network, host=self.host, ip=req.ip, mac=req.mac
            )
        except ControllerError as exc:
            raise AttachError(exc.status, exc.detail) from exc

        undo: list[tuple[str, Callable[[], Awaitable[None]]]] = []

        async def forget() -> None:
            await self.controller.delete_container(str(record.get("id", name)))

        undo.append(("delete endpoint at the controller", forget))
        try:
            try:
                ep = EndpointInfo.model_validate(record)
            except ValidationError as exc:
                raise AttachError(502, f"unexpected endpoint record: {exc}") from exc
            if not netlink.valid_ifname(ep.port):
                raise AttachError(502, f"controller gave an invalid port name {ep.port!r}")
            peer = peer_temp_name(ep.id)

            await self._run(self.ops.create_veth, ep.port, peer, ep.mtu)

            async def drop_veth() -> None:
                await self._run(self.ops.delete_link, ep.port)

            undo.append((f"delete veth {ep.port}", drop_veth))
            await self._run(
                self.ops.setup_container_side, peer, req.netns, req.ifname, mac=ep.mac,
                mtu=ep.mtu, ip=ep.ip, prefixlen=ep.prefixlen, gateway=ep.gateway,
            )
            await self._run(self.ops.host_side_up, ep.port, ep.mtu)
            await self._run(
                self.ops.add_port, ep.port, {ENDPOINT_KEY: ep.id, CONTAINER_KEY: ep.name}
            )

            async def drop_port() -> None:
                await self._run(self.ops.del_port, ep.port)

            undo.append((f"delete OVS port {ep.port}", drop_port))
        except BaseException as exc:
            await self._rollback(undo)
            if isinstance(exc, AttachError):
                raise
            if isinstance(exc, NetlinkError | OvsError):
                raise AttachError(500, f"attach {name}: {exc}") from exc
            if isinstance(exc, ControllerError):
                raise AttachError(exc.status, exc.detail) from exc
            raise
        log.info("attached %s (netns %s) ip=%s port=%s", ep.name, req.netns, ep.ip, ep.port)
        return record

    @staticmethod
    async def _rollback(undo: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
        for what, step in reversed(undo):
            try:
                await step()
            except Exception as exc:
                log.error("rollback: %s failed: %s", what, exc)

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
            await self._run(self.ops.del_port, ep.port)
            await self._run(self.ops.delete_link, ep.port)
        except (NetlinkError, OvsError) as exc:
            raise AttachError(500, f"detach {name}: {exc}") from exc
        try:
            await self.controller.delete_container(ep.id)
        except ControllerError as exc:
            if exc.status != 404:
                raise AttachError(exc.status, exc.detail) from exc
        log.info("detached %s (port %s)", ep.name, ep.port)
        return {"detached": name}
