"""Registering this host at the controller, and the bridge that registration configures."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

from hostnet.agent.client import (
    ControllerClient,
    ControllerError,
    ControllerUnreachable,
    Registration,
)
from hostnet.agent.config import AgentConfig, AgentStartupError, controller_ipv4
from hostnet.agent.tunnel import Tunnel
from hostnet.host import netlink
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import Ovs
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0


def next_backoff(current: float) -> float:
    return min(BACKOFF_MAX, max(BACKOFF_MIN, current * 2))


def usable_targets(targets: list[str], *, tls: bool) -> list[str]:
    """The controller's OpenFlow targets this switch may use: with TLS files only
    ssl: ones (a plain tcp: target would carry the switch's traffic in clear to
    whoever answers), without them only tcp: ones (OVS has no certificate)."""
    scheme = "ssl:" if tls else "tcp:"
    usable = [t for t in targets if t.startswith(scheme)]
    dropped = [t for t in targets if not t.startswith(scheme)]
    if dropped:
        log.error("ignoring OpenFlow target(s) %s: this agent %s", ", ".join(dropped),
                  "has TLS files: it uses ssl: targets only" if tls
                  else "has no TLS files (--tls-*): it cannot use ssl: targets")
    return usable


class Registrar:
    """POST /hosts, then the bridge's datapath id and OpenFlow targets from the answer.

    `address` is the underlay address (the configured one, else found once: the
    source address towards the controller)."""

    def __init__(
        self, cfg: AgentConfig, client: ControllerClient, ovs: Ovs, datapath_type: str,
        tunnel: Tunnel, *, host_exec: Executor,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.ovs = ovs
        self.datapath_type = datapath_type
        self.tunnel = tunnel
        self.host_exec = host_exec
        self.address: str | None = cfg.address
        self.registration: Registration | None = None

    async def register(self) -> Registration:
        assert self.address is not None
        fields = await in_thread(self.host_exec, self.tunnel.registration_fields)
        reg = await self.client.register(self.cfg.host, self.address, self.cfg.site, fields)
        await in_thread(
            self.host_exec, self.ovs.ensure_bridge, self.cfg.bridge, self.datapath_type,
            reg.dpid, usable_targets(reg.openflow_targets, tls=self.cfg.tls),
        )
        self.registration = reg
        return reg

    async def register_with_retry(self) -> Registration:
        """Register, retrying until `connect_timeout` while the controller is away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.connect_timeout
        delay = BACKOFF_MIN
        last = ""
        while True:
            try:
                if self.address is None:
                    target = controller_ipv4(self.client.base_url)
                    self.address = await in_thread(
                        self.host_exec, netlink.source_address_for, target
                    )
                return await self.register()
            except ControllerUnreachable as exc:
                last = exc.detail
            except ControllerError as exc:
                if exc.status < 500:
                    raise AgentStartupError(
                        f"controller refused registration of {self.cfg.host}: {exc.detail}"
                    ) from exc
                last = exc.detail
            except AgentStartupError as exc:
                last = str(exc)
            except NetlinkError as exc:
                last = f"cannot find a source address towards the controller: {exc}"
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AgentStartupError(
                    f"controller not reachable within {self.cfg.connect_timeout:g}s: {last}"
                )
            log.debug("registration failed (%s); retrying", last)
            await asyncio.sleep(min(delay, remaining))
            delay = next_backoff(delay)
