"""The agent's HTTP client of the controller's REST API: over HTTPS with the host's
certificate (`tls`; the controller derives the host from it), else the bearer
token (development, a controller run with --insecure-plaintext)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from controller.trust.tls import ClientContext

API = "/api/v1"


class ControllerError(Exception):
    """The controller answered with an error, or could not be reached (status 502)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ControllerUnreachable(ControllerError):
    def __init__(self, detail: str) -> None:
        super().__init__(502, detail)


class Registration(BaseModel):
    """The answer to `POST /hosts`."""

    model_config = ConfigDict(extra="allow")

    name: str
    address: str
    site: str = "default"
    dpid: int
    openflow_targets: list[str]


class EndpointInfo(BaseModel):
    """The parts of an endpoint record the agent needs to plumb a container."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    network: str
    host: str
    ip: str
    mac: str
    port: str
    prefixlen: int
    gateway: str | None = None
    mtu: int = 1500


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        d = body["detail"]
        if isinstance(d, str):
            return d
        if isinstance(d, list) and d and isinstance(d[0], dict) and "msg" in d[0]:
            loc = ".".join(str(x) for x in d[0].get("loc", []) if x != "body")
            return f"{loc}: {d[0]['msg']}" if loc else str(d[0]["msg"])
        return str(d)
    text = " ".join(resp.text.split())[:200]
    return text or f"HTTP {resp.status_code}"


def stream_url(controller: str, host: str) -> str:
    """ws(s)://…/api/v1/hosts/{host}/stream for a controller base URL http(s)://…."""
    parts = urlsplit(controller)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"controller URL must be http(s)://…, not {controller!r}")
    path = parts.path.rstrip("/") + f"{API}/hosts/{quote(host, safe='')}/stream"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def controller_urls(value: str) -> list[str]:
    """The controller replicas' base URLs of a `--controller URL[,URL...]` value."""
    urls = [u.strip().rstrip("/") for u in value.split(",")]
    if not all(urls):
        raise ValueError(f"controller URL list {value!r} has an empty entry")
    return urls


class ControllerAPI(Protocol):
    """What the attacher and the Docker plugin ask of the controller
    (ControllerClient; a fake in the unit tests)."""

    async def create_container(
        self, *, name: str, network: str, host: str, ip: str | None, mac: str | None
    ) -> dict[str, Any]: ...

    async def get_container(self, name_or_id: str) -> dict[str, Any]: ...

    async def delete_container(self, name_or_id: str) -> None: ...

    async def list_containers(self, host: str) -> list[dict[str, Any]]: ...

    async def list_networks(self) -> list[dict[str, Any]]: ...

    async def create_network(
        self, name: str, subnet: str, gateway: str | None = None, *,
        mtu: int | None = None, internal: bool = False, reserved: Sequence[str] = (),
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...

    async def delete_network(self, name: str) -> None: ...

    async def publish_port(
        self, name_or_id: str, host_port: int, container_port: int, protocol: str
    ) -> dict[str, Any]: ...

    async def unpublish_port(self, name_or_id: str, port_id: str) -> None: ...

    async def published_ports(self) -> list[dict[str, Any]]: ...

    async def update_container(
        self, name_or_id: str, *, name: str | None = None, docker_id: str | None = None,
        aliases: list[str] | None = None, hostname: str | None = None,
    ) -> dict[str, Any]: ...

    async def relocate_container(self, name_or_id: str, host: str) -> dict[str, Any]: ...


class ControllerClient:
    """The API of the controller replicas (`base_url` may list several, comma-separated).

    Requests go to the replica that answered last.  One that cannot be reached, or
    answers 503 (no store quorum, election under way: nothing was changed), makes
    the request try the next replica; a request that may have reached a replica
    (a read timeout) is not repeated elsewhere, but the next request starts at the
    next replica.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ClientContext | None = None,
    ) -> None:
        """`tls`: the deployment's CA (verifies the controller) and this host's
        certificate (presented to it), reloaded when renewed."""
        self.urls = controller_urls(base_url)
        self._current = 0
        self.token = token
        self.tls = tls
        self._timeout = timeout
        self._transport = transport
        self._http = self._client()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=bearer(self.token),
            timeout=self._timeout,
            transport=self._transport,
            verify=self.tls.context if self.tls is not None else True,
        )

    @property
    def base_url(self) -> str:
        """The replica requests (and the agent stream) go to now."""
        return self.urls[self._current]

    def rotate(self) -> str:
        """Move on to the next replica; its URL."""
        self._current = (self._current + 1) % len(self.urls)
        return self.base_url

    def use(self, url: str) -> bool:
        """Go to replica `url` next if it is one of ours (a URL a controller names is
        followed only when the operator configured it: the bearer token goes there)."""
        url = url.rstrip("/")
        if url not in self.urls:
            return False
        self._current = self.urls.index(url)
        return True

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp: httpx.Response | None = None
        failures: list[str] = []
        if self.tls is not None:
            loaded = self.tls.reloads
            self.tls.refresh()  # a renewed certificate, for the next connection
            if self.tls.reloads != loaded:
                # The pool's open connections still present the old certificate (a
                # revoked one, after a rotation): new connections from here on.
                old, self._http = self._http, self._client()
                await old.aclose()
        for _ in self.urls:
            url = self.base_url
            try:
                resp = await self._http.request(method, url + API + path, **kwargs)
            except httpx.HTTPError as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                failures.append(f"controller {url} unreachable: {reason}")
                self.rotate()
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    continue  # never sent: safe to try the next replica
                break
            if resp.status_code == 503 and len(self.urls) > 1:
                failures.append(f"controller {url}: {_detail(resp)}")
                self.rotate()
                resp = None
                continue
            break
        if resp is None:
            raise ControllerUnreachable("; ".join(failures))
        if resp.status_code >= 400:
            status = resp.status_code if resp.status_code < 500 else 502
            raise ControllerError(status, _detail(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ControllerError(502, f"controller sent invalid JSON for {method} {path}") from exc

    async def register(
        self, name: str, address: str, site: str, extra: dict[str, Any] | None = None
    ) -> Registration:
        """POST /hosts; `extra` adds the WireGuard fields of a host with a tunnel."""
        payload: dict[str, Any] = {"name": name, "address": address, "site": site}
        payload.update(extra or {})
        body = await self._request("POST", "/hosts", json=payload)
        try:
            return Registration.model_validate(body)
        except ValidationError as exc:
            raise ControllerError(502, f"unexpected registration answer: {exc}") from exc

    async def create_container(
        self, *, name: str, network: str, host: str, ip: str | None, mac: str | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": name, "network": network, "host": host}
        if ip is not None:
            payload["ip"] = ip
        if mac is not None:
            payload["mac"] = mac
        body = await self._request("POST", "/containers", json=payload)
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to POST /containers")
        return body

    async def get_container(self, name_or_id: str) -> dict[str, Any]:
        body = await self._request("GET", f"/containers/{quote(name_or_id, safe='')}")
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to GET /containers/{name}")
        return body

    async def delete_container(self, name_or_id: str) -> None:
        await self._request("DELETE", f"/containers/{quote(name_or_id, safe='')}")

    async def list_containers(self, host: str) -> list[dict[str, Any]]:
        body = await self._request("GET", "/containers", params={"host": host})
        if not isinstance(body, list):
            raise ControllerError(502, "unexpected answer to GET /containers")
        return [e for e in body if isinstance(e, dict)]

    # -- used by the Docker plugin ----------------------------------------------------

    async def list_networks(self) -> list[dict[str, Any]]:
        body = await self._request("GET", "/networks")
        if not isinstance(body, list):
            raise ControllerError(502, "unexpected answer to GET /networks")
        return [n for n in body if isinstance(n, dict)]

    async def create_network(
        self, name: str, subnet: str, gateway: str | None = None, *,
        mtu: int | None = None, internal: bool = False, reserved: Sequence[str] = (),
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": name, "subnet": subnet}
        if labels:
            payload["labels"] = labels
        if gateway:
            payload["gateway"] = gateway
        if mtu is not None:
            payload["mtu"] = mtu
        if internal:
            payload["internal"] = True
        if reserved:
            payload["reserved"] = list(reserved)
        body = await self._request("POST", "/networks", json=payload)
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to POST /networks")
        return body

    async def delete_network(self, name: str) -> None:
        await self._request("DELETE", f"/networks/{quote(name, safe='')}")

    async def update_container(
        self, name_or_id: str, *, name: str | None = None, docker_id: str | None = None,
        aliases: list[str] | None = None, hostname: str | None = None,
    ) -> dict[str, Any]:
        fields = (("name", name), ("docker_id", docker_id), ("aliases", aliases),
                  ("hostname", hostname))
        payload: dict[str, Any] = {k: v for k, v in fields if v is not None}
        body = await self._request(
            "PATCH", f"/containers/{quote(name_or_id, safe='')}", json=payload
        )
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to PATCH /containers/{name}")
        return body

    async def relocate_container(self, name_or_id: str, host: str) -> dict[str, Any]:
        body = await self._request(
            "POST", f"/containers/{quote(name_or_id, safe='')}/relocate", json={"host": host}
        )
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to POST /containers/{name}/relocate")
        return body

    async def publish_port(
        self, name_or_id: str, host_port: int, container_port: int, protocol: str
    ) -> dict[str, Any]:
        body = await self._request(
            "POST", f"/containers/{quote(name_or_id, safe='')}/ports",
            json={"host_port": host_port, "container_port": container_port,
                  "protocol": protocol},
        )
        if not isinstance(body, dict):
            raise ControllerError(502, "unexpected answer to POST /containers/{name}/ports")
        return body

    async def unpublish_port(self, name_or_id: str, port_id: str) -> None:
        await self._request(
            "DELETE",
            f"/containers/{quote(name_or_id, safe='')}/ports/{quote(port_id, safe='')}",
        )

    async def published_ports(self) -> list[dict[str, Any]]:
        """Every published port, with the host its container runs on."""
        body = await self._request("GET", "/firewalls/ports")
        if not isinstance(body, list):
            raise ControllerError(502, "unexpected answer to GET /firewalls/ports")
        return [p for p in body if isinstance(p, dict)]


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header of `token`; none without one (under TLS the host's
    certificate names the caller)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
