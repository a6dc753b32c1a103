"""Commands from the controller (requests on the stream, each answered by a `result`):
`wg-*` rotate this host's WireGuard key, the others move Docker containers."""

from __future__ import annotations

import logging

from controller.agents.messages import CommandMessage, Result
from hostnet.agent.client import ControllerError
from hostnet.agent.tunnel import Tunnel
from hostnet.docker.common import PluginError
from hostnet.docker.engine import DockerError
from hostnet.docker.plugin import DockerPlugin

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, host: str, tunnel: Tunnel, plugin: DockerPlugin | None) -> None:
        self.host = host
        self.tunnel = tunnel
        self.plugin = plugin  # None: this host serves no Docker plugin

    async def run(self, cmd: CommandMessage) -> Result:
        """Run a controller command; the result message to send."""
        if cmd.op.startswith("wg-"):
            return await self.tunnel.command(cmd)
        try:
            if self.plugin is None:
                raise PluginError(f"host {self.host} serves no Docker plugin")
            data = await self.plugin.command(cmd.op, cmd.args)
        except (PluginError, DockerError, ControllerError, KeyError) as exc:
            log.error("command %s failed: %s", cmd.op, exc)
            return Result(seq=cmd.seq, ok=False, error=str(exc))
        except Exception as exc:  # a bug: tell the controller, keep the stream
            log.exception("command %s failed unexpectedly", cmd.op)
            return Result(seq=cmd.seq, ok=False, error=f"{type(exc).__name__}: {exc}")
        log.info("command %s done", cmd.op)
        return Result(seq=cmd.seq, ok=True, data=data)
