"""The agent's configuration and the startup checks of its inputs."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hostnet.docker.engine import DEFAULT_DOCKER_HOST

DEFAULT_SOCKET = "/run/daolinet/hostnet.sock"


class AgentStartupError(Exception):
    """The agent cannot start; the message is the one line shown to the operator."""


@dataclass
class AgentConfig:
    controller: str
    token_file: Path
    host: str
    ovsdb: str
    bridge: str = "br-dl"
    address: str | None = None
    socket_path: Path = field(default_factory=lambda: Path(DEFAULT_SOCKET))
    site: str = "default"
    datapath_type: str = "auto"
    connect_timeout: float = 30.0
    # Docker plugin socket ("" = no Docker plugin; the CLI defaults to
    # /run/docker/plugins/daolinet.sock) and the Docker API it resolves names with.
    plugin_socket: str = ""
    docker_host: str = DEFAULT_DOCKER_HOST
    # WireGuard provisioning file (hostnet/host/wireguard.py); None: no tunnel, one site only
    wireguard: Path | None = None
    key_switch_delay: float = 0.5  # after wg-commit, so peers learn the new key first


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise AgentStartupError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise AgentStartupError(f"token file {path} is empty")
    return token


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
