"""The HTTP client of the REST API, and how a command calls it: one request per
command; an API error, an unreachable API or a bad URL becomes one CliError line."""

from __future__ import annotations

import functools
import json
import ssl
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import typer

from controller.cliutil import CliError

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
TIMEOUT = 15.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR),
    loaded once: every httpx.Client would load the CA bundle again (~20 ms)."""
    return httpx.create_ssl_context()


@functools.cache
def _tls_of_ca(ca: str) -> ssl.SSLContext:
    """A context trusting only the deployment's CA (`--ca`), which signs the
    controller's certificate; CliError naming the file that does not load."""
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot load the CA certificate --ca {ca}: {exc}") from None


@dataclass(frozen=True)
class Client:
    url: str
    token: str | None
    timeout: float = TIMEOUT
    ca: str | None = None  # the deployment's CA certificate (PEM): verifies an https API

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The API's JSON answer (None when empty); `timeout` overrides the client's."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        target = self.url.rstrip("/") + API_PREFIX + path
        try:
            verify = _tls_of_ca(self.ca) if self.ca else _tls()
            with httpx.Client(timeout=timeout or self.timeout, verify=verify) as http:
                response = http.request(method, target, json=body, params=params, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(f"invalid API URL {self.url!r}: {exc}") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the daolinet API at {self.url}: {reason}") from None
        if response.status_code >= 400:
            raise CliError(self._error_message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"unexpected answer from {target} (HTTP {response.status_code}): not JSON"
            ) from None

    def _error_message(self, response: httpx.Response) -> str:
        detail: Any
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if detail is None:
            text = response.text.strip().splitlines()
            detail = text[0] if text else response.reason_phrase
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        detail = " ".join(detail.split())  # one line
        if response.status_code == 401 and not self.token:
            detail += " (set DAOLINET_TOKEN or pass --token)"
        return f"{detail} (HTTP {response.status_code})"


def client_of(ctx: typer.Context) -> Client:
    """The client the app's callback made from --url and --token."""
    client = ctx.obj
    assert isinstance(client, Client)
    return client


def fail(message: str) -> NoReturn:
    """End the command: `error: message` on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def call(
    ctx: typer.Context,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """One API request of a command; its failure ends the command (see `fail`)."""
    try:
        return client_of(ctx).request(method, path, body=body, params=params, timeout=timeout)
    except CliError as exc:
        fail(str(exc))
