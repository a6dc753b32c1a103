"""What the plugin's parts (IPAM, driver, reconcile, move) share: what they talk to,
the host steps of a Docker endpoint, the refusal Docker shows, the translation of
the controller's and Docker's errors into it, address parsing, and the names
daolinet gives things in Docker."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hostnet.agent.client import ControllerAPI, ControllerError
from hostnet.docker.engine import DockerAPI, DockerError
from hostnet.host import netlink
from hostnet.host.ports import PortOps, SystemPortOps

T = TypeVar("T")

ADDRESS_SPACE = "daolinet"
# external_ids key of an OVS port: the Docker endpoint it serves
DOCKER_ENDPOINT_KEY = "daolinet-docker-endpoint"
# external_ids key of an OVS port: the ids of the ports published for its Docker
# endpoint (`docker run -p`), comma-separated, so that revoking them needs no state.
DOCKER_PUBLISHED_KEY = "daolinet-docker-published"
# A container's endpoint is named so until Docker tells its name (after the join).
PROVISIONAL_PREFIX = "docker-"
RESOLVE_TIMEOUT = 30.0


class DockerPortOps(PortOps, Protocol):
    """Host-side steps of a Docker endpoint (synchronous, run in a worker thread)."""

    def ports(self) -> dict[str, dict[str, str]]: ...

    def tx_offload_off(self, name: str) -> None: ...

    def set_port_ids(self, port: str, external_ids: dict[str, str]) -> None: ...

    def link_exists(self, name: str) -> bool: ...


class SystemDockerPortOps(SystemPortOps):
    """DockerPortOps on the real host."""

    def ports(self) -> dict[str, dict[str, str]]:
        """{port: external_ids} of the bridge's daolinet ports."""
        return self.ovs.endpoint_ports(self.bridge)

    def tx_offload_off(self, name: str) -> None:
        """In the host namespace, before Docker moves the veth end into the container."""
        if self.disable_offload:
            netlink.disable_tx_offload(None, name)

    def set_port_ids(self, port: str, external_ids: dict[str, str]) -> None:
        """Record (an empty value: forget) keys in the port's external_ids."""
        self.ovs.set_external_ids(port, external_ids)

    def link_exists(self, name: str) -> bool:
        return netlink.link_exists(name)


@dataclass
class NetworkDeletions:
    """This engine's DeleteNetwork calls (driver.py), as the network sync
    (reconcile.py) needs them: one begun after the sync read the engine, or still
    running, may have deleted at the controller a network that the engine no longer
    listed, and the sync would make it again."""

    begun: int = 0
    running: int = 0


@dataclass(frozen=True)
class PluginDeps:
    """What the plugin's parts talk to: this host's name, the controller, the Docker
    engine, the host's ports (through `executor`, a worker thread)."""

    host: str
    controller: ControllerAPI
    docker: DockerAPI
    ops: DockerPortOps
    executor: Executor | None = None


class PluginError(Exception):
    """A refusal; Docker shows `daolinet: <message>` to the user."""


async def from_controller(call: Awaitable[T]) -> T:
    """The result of a controller call; its error as a refusal."""
    try:
        return await call
    except ControllerError as exc:
        raise PluginError(exc.detail) from exc


async def from_docker(call: Awaitable[T]) -> T:
    """The result of a Docker API call; its error as a refusal."""
    try:
        return await call
    except DockerError as exc:
        raise PluginError(exc.message) from exc


def subnet_of(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        raise PluginError(f"subnet {value!r} is not an IPv4 CIDR") from None


def ipv4_of(value: Any) -> str:
    """The address of `value` ("A.B.C.D" or "A.B.C.D/N")."""
    text = str(value or "").split("/")[0]
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise PluginError(f"{value!r} is not an IPv4 address") from None
