"""The few Docker Engine API calls the plugin needs (HTTP over the engine's unix socket).

`DockerAPI` is what the plugin's parts use (DockerClient; a fake in the unit tests).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import httpx

PLUGIN_NAME = "daolinet"
# Marks a Docker network the agent made (sync_networks), not a user: of two networks
# with one name, the agent's copy is the one to drop.
SYNCED_LABEL = "io.daolinet.synced"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# The one driver option (`docker network create -o KEY=VALUE`) daolinet knows: Docker's
# own key for a network's MTU (libnetwork netlabel.DriverMTU).
MTU_OPTION = "com.docker.network.driver.mtu"


class DockerError(Exception):
    """A Docker API call failed (`status` is the HTTP status; 502: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DockerClient:
    """The few Docker Engine API calls the plugin needs (HTTP over a unix socket)."""

    def __init__(self, docker_host: str, timeout: float = 30.0) -> None:
        if not docker_host.startswith("unix://"):
            raise ValueError(f"docker host must be unix:///PATH, not {docker_host!r}")
        self.path = docker_host.removeprefix("unix://")
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=self.path),
            base_url="http://docker",
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DockerError(502, f"dockerd at {self.path} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = str(resp.json().get("message", resp.text))
            except (ValueError, AttributeError):
                message = resp.text
            raise DockerError(resp.status_code, " ".join(message.split()))
        if not resp.content:
            return None
        return resp.json()

    async def renames(self) -> AsyncIterator[tuple[str, str]]:
        """(container id, new name) of every `docker rename` from now on, as Docker's
        event stream tells them; ends (DockerError) when the stream breaks."""
        filters = json.dumps({"type": ["container"], "event": ["rename"]})
        try:
            async with self._http.stream(
                "GET", "/events", params={"filters": filters},
                timeout=httpx.Timeout(30.0, read=None),
            ) as resp:
                if resp.status_code >= 400:
                    raise DockerError(resp.status_code, "events refused")
                async for line in resp.aiter_lines():
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        actor = json.loads(line)["Actor"]
                        name = str(actor["Attributes"]["name"]).lstrip("/")
                        yield str(actor["ID"]), name
        except httpx.HTTPError as exc:
            raise DockerError(502, f"dockerd at {self.path}: events: {exc}") from exc

    async def networks(self) -> list[dict[str, Any]]:
        """The Docker networks of the daolinet driver."""
        filters = json.dumps({"driver": [PLUGIN_NAME]})
        body = await self._call("GET", "/networks", params={"filters": filters})
        return [n for n in body or [] if isinstance(n, dict)]

    async def _get_object(self, path: str) -> dict[str, Any] | None:
        """The JSON object at `path`; None if Docker has no such thing (404)."""
        try:
            body = await self._call("GET", path)
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def _delete(self, path: str, **kwargs: Any) -> None:
        """DELETE `path`; a thing already gone (404) is not an error."""
        try:
            await self._call("DELETE", path, **kwargs)
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def network(self, network_id: str) -> dict[str, Any] | None:
        return await self._get_object(f"/networks/{quote(network_id, safe='')}")

    async def create_network(
        self, name: str, subnet: str, gateway: str | None, *,
        mtu: int | None = None, internal: bool = False, aux: Sequence[str] = (),
        labels: dict[str, str] | None = None,
    ) -> str:
        """A daolinet network in this engine, as the agent makes it (SYNCED_LABEL)."""
        config: dict[str, Any] = {"Subnet": subnet}
        if gateway:
            config["Gateway"] = gateway
        if aux:
            config["AuxiliaryAddresses"] = {f"reserved{i}": a for i, a in enumerate(aux)}
        body = await self._call("POST", "/networks/create", json={
            "Name": name, "Driver": PLUGIN_NAME, "CheckDuplicate": True,
            "Internal": internal,
            "Options": {MTU_OPTION: str(mtu)} if mtu is not None else {},
            "IPAM": {"Driver": PLUGIN_NAME, "Config": [config]},
            "Labels": (labels or {}) | {SYNCED_LABEL: "1"},
        })
        return str(body.get("Id", ""))

    async def remove_network(self, network_id: str) -> None:
        await self._delete(f"/networks/{quote(network_id, safe='')}")

    async def containers(self, network_id: str) -> list[dict[str, Any]]:
        filters = json.dumps({"network": [network_id]})
        body = await self._call(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        return [c for c in body or [] if isinstance(c, dict)]

    async def inspect(self, container: str) -> dict[str, Any] | None:
        return await self._get_object(f"/containers/{quote(container, safe='')}/json")

    async def run(self, name: str, config: dict[str, Any]) -> str:
        """Create and start a container; remove it again if it does not start."""
        body = await self._call(
            "POST", "/containers/create", params={"name": name}, json=config
        )
        cid = str(body["Id"])
        try:
            await self._call("POST", f"/containers/{cid}/start")
        except BaseException:
            with contextlib.suppress(DockerError):
                await self.remove(cid)
            raise
        return cid

    async def remove(self, container: str) -> None:
        await self._delete(f"/containers/{quote(container, safe='')}", params={"force": "1"})


class DockerAPI(Protocol):
    async def networks(self) -> list[dict[str, Any]]: ...

    async def network(self, network_id: str) -> dict[str, Any] | None: ...

    async def create_network(
        self, name: str, subnet: str, gateway: str | None, *,
        mtu: int | None = None, internal: bool = False, aux: Sequence[str] = (),
        labels: dict[str, str] | None = None,
    ) -> str: ...

    async def remove_network(self, network_id: str) -> None: ...

    async def containers(self, network_id: str) -> list[dict[str, Any]]: ...

    async def inspect(self, container: str) -> dict[str, Any] | None: ...

    async def run(self, name: str, config: dict[str, Any]) -> str: ...

    async def remove(self, container: str) -> None: ...


def docker_subnets(network: dict[str, Any]) -> list[tuple[ipaddress.IPv4Network, str | None]]:
    """The (subnet, gateway) pairs of a Docker network's IPAM config."""
    found = []
    for cfg in (network.get("IPAM") or {}).get("Config") or []:
        if isinstance(cfg, dict) and cfg.get("Subnet"):
            with contextlib.suppress(ValueError):
                net = ipaddress.IPv4Network(str(cfg["Subnet"]), strict=False)
                found.append((net, str(cfg["Gateway"]) if cfg.get("Gateway") else None))
    return found


def docker_network_options(network: dict[str, Any]) -> dict[str, Any]:
    """What a Docker network record says of daolinet's network options: `mtu` (None:
    default), `internal`, `reserved` (its aux addresses), `labels` (without the
    agent's SYNCED_LABEL)."""
    options = network.get("Options") or {}
    mtu_text = str(options.get(MTU_OPTION, "")).strip()
    reserved: list[str] = []
    for cfg in (network.get("IPAM") or {}).get("Config") or []:
        if isinstance(cfg, dict):
            aux = cfg.get("AuxiliaryAddresses") or {}
            reserved += sorted(str(a) for a in aux.values()) if isinstance(aux, dict) else []
    return {
        "mtu": int(mtu_text) if mtu_text.isdigit() else None,
        "internal": bool(network.get("Internal")),
        "reserved": reserved,
        "labels": {str(k): str(v) for k, v in (network.get("Labels") or {}).items()
                   if k != SYNCED_LABEL},
    }
