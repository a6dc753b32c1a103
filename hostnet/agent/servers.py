"""The agent's HTTP servers on unix sockets (the local API and the Docker plugin)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from hostnet.agent.config import AgentStartupError

# sd_listen_fds(3): the first socket systemd passes is file descriptor 3.
SD_LISTEN_FDS_START = 3


def systemd_socket(path: Path) -> socket.socket | None:
    """The listening unix socket at `path` that systemd passed (socket activation), if any.

    A `.socket` unit makes the socket exist before dockerd starts (roles/hostnet): Docker
    finds the plugin at once and its requests wait in the backlog until the agent
    serves them, instead of `plugin "daolinet" not found` during a host's boot.  The
    environment is left alone for other paths, and cleared once the socket is taken so
    no child process sees it.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        if sock.family == socket.AF_UNIX and sock.getsockname() == str(path):
            sock.set_inheritable(False)
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)
            return sock
        sock.detach()  # not ours to close
    return None


def bind_unix_socket(path: Path, mode: int = 0o660) -> socket.socket:
    """Bind a listening unix socket at `path`, replacing a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise AgentStartupError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: stale
        else:
            raise AgentStartupError(f"another agent is already serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise AgentStartupError(f"cannot bind {path}: {exc.strerror}") from exc
    return sock


class UnixServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent owns SIGTERM/SIGINT."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(uvicorn.Config(
            app, lifespan="off", access_log=False, log_level="warning", log_config=None,
        ))

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield
