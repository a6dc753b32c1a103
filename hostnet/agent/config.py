"""The agent's configuration (a pydantic-settings model: command line or environment)
and the startup checks of its inputs."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.cliutil import read_secret
from hostnet.docker.engine import DEFAULT_DOCKER_HOST
from hostnet.docker.plugin import DEFAULT_PLUGIN_SOCKET

DEFAULT_SOCKET = "/run/daolinet/hostnet.sock"
DEFAULT_STATE_DIR = "/var/lib/daolinet-hostnet"
DEFAULT_METRICS_PORT = 9478


class AgentStartupError(Exception):
    """The agent cannot start; the message is the one line shown to the operator."""


ENV_PREFIX = "DAOLINET_"


class AgentConfig(BaseSettings):
    """The options of `daolinet-hostnet agent`; each is also DAOLINET_<NAME> in the
    environment (`--token-file`: DAOLINET_TOKEN_FILE)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    controller: str = Field(
        description="Controller base URL, e.g. http://10.0.0.1:8080; replicas comma-separated "
        "(http://10.0.0.1:8080,http://10.0.0.2:8080): the agent uses the leader."
    )
    token_file: Path | None = Field(
        None, description="File holding the API bearer token (the agent token); needed "
        "only without --tls-*: under TLS the host's certificate is its credential."
    )
    host: str = Field(description="This host's name in daolinet.")
    ovsdb: str = Field(description="OVSDB target, e.g. unix:/run/openvswitch/db.sock.")
    bridge: str = Field("br-dl", description="OVS bridge name.")
    address: str | None = Field(
        None, description="Underlay address (default: source address towards the controller)."
    )
    socket: Path = Field(Path(DEFAULT_SOCKET), description="Unix socket of the local agent.")
    site: str = Field("default", description="Site of this host.")
    datapath_type: Literal["auto", "system", "netdev"] = Field(
        "auto", description="OVS datapath (auto detects)."
    )
    connect_timeout: float = Field(
        30.0, description="Seconds to wait for the controller at startup."
    )
    plugin_socket: str = Field(
        DEFAULT_PLUGIN_SOCKET,
        description="Socket of the Docker network/IPAM plugin (empty: no Docker plugin).",
    )
    docker_host: str = Field(
        DEFAULT_DOCKER_HOST, description="Docker API of this host (unix:///PATH)."
    )
    state_dir: Path = Field(
        Path(DEFAULT_STATE_DIR), description="Directory of what the agent keeps "
        "across reboots (the Docker containers' restart policies)."
    )
    wireguard: Path | None = Field(
        None, description="WireGuard provisioning file (see `wg-up`): tunnel to other sites."
    )
    key_switch_delay: float = Field(
        0.5, description="Seconds after wg-commit before the key switches, so peers learn "
        "the new key first."
    )
    docker_forwarding: bool = Field(
        True, description="Keep daolinet's accept rules (br-dl, the tunnel) at the head of "
        "Docker's DOCKER-USER chain when it exists: Docker's FORWARD policy drops routed "
        "traffic otherwise (--no-docker-forwarding: the operator's firewall allows it)."
    )
    tls_ca: Path | None = Field(
        None, description="The deployment's CA certificate (PEM); with --tls-cert and "
        "--tls-key: the agent reaches the controller's API and stream over HTTPS (https:// "
        "--controller URLs) and the switch connects over TLS (ssl: targets), both with "
        "this host's certificate."
    )
    tls_cert: Path | None = Field(None, description="This host's certificate (PEM, OU=host).")
    tls_key: Path | None = Field(None, description="This host's private key (PEM).")
    metrics_address: str = Field(
        "127.0.0.1", description="Address of the agent's /metrics (docs/operations.md, "
        "\"Metrics\"); an address other than a loopback one needs --tls-*: scrapers then "
        "present a certificate of the deployment's CA."
    )
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT, ge=0, le=65535,
        description="Port of the agent's /metrics (0: no metrics server)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning, error; each HTTP request to the "
        "controller is logged only at debug (controller/logs.py)."
    )

    @field_validator("address")
    @classmethod
    def _ipv4(cls, address: str | None) -> str | None:
        if address is not None:
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise ValueError(f"--address: {address!r} is not an IPv4 address") from None
        return address

    @field_validator("metrics_address")
    @classmethod
    def _ip(cls, address: str) -> str:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"--metrics-address: {address!r} is not an IP address") from None
        return address

    @model_validator(mode="after")
    def _metrics_off_the_host_over_tls(self) -> AgentConfig:
        """Every channel is authenticated and encrypted (docs/security.md): past the
        loopback interface the metrics are served over TLS with client certificates."""
        loopback = ipaddress.ip_address(self.metrics_address).is_loopback
        if self.metrics_port and not loopback and self.tls_ca is None:
            raise ValueError(
                f"--metrics-address {self.metrics_address}: not a loopback address, so the "
                "metrics need TLS: give --tls-ca, --tls-cert and --tls-key (scrapers "
                "present a certificate of that CA), or listen on 127.0.0.1")
        return self

    @model_validator(mode="after")
    def _docker_api_on_unix_socket(self) -> AgentConfig:
        if self.plugin_socket and not self.docker_host.startswith("unix://"):
            raise ValueError(f"--docker-host: {self.docker_host!r} is not unix:///PATH")
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> AgentConfig:
        given = [f for f in ("tls_ca", "tls_cert", "tls_key") if getattr(self, f) is not None]
        if given and len(given) != 3:
            raise ValueError("--tls-ca, --tls-cert and --tls-key go together (given: "
                             + ", ".join("--" + f.replace("_", "-") for f in given) + ")")
        if not given and self.token_file is None:
            raise ValueError("--token-file: needed without --tls-* (a controller run with "
                             "--insecure-plaintext takes the agent token)")
        if given:
            plain = [u for u in self.controller.split(",")
                     if not u.strip().lower().startswith("https://")]
            if plain:
                raise ValueError(
                    f"--controller {plain[0].strip()}: with --tls-* the controller's API "
                    "is HTTPS: give https://HOST:PORT")
        return self

    @property
    def tls(self) -> bool:
        """Whether the host's TLS files are given (all three)."""
        return self.tls_ca is not None


def read_token(path: Path) -> str:
    try:
        return read_secret(path, "token file")
    except ValueError as exc:
        raise AgentStartupError(str(exc)) from None


def controller_ipv4(controller: str) -> str:
    """The IPv4 address of the controller URL's host (resolving a name)."""
    host = urlsplit(controller).hostname
    if not host:
        raise AgentStartupError(f"controller URL {controller!r} has no host")
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise AgentStartupError(f"cannot resolve controller host {host}: {exc}") from exc
    return str(infos[0][4][0])
