"""The agent's WireGuard side (docs/architecture.md, "Sites"): this host's end of the
mesh, its registration fields, mesh updates from the stream and key rotation."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from controller.agents.messages import CommandMessage, MeshHost, Result
from hostnet.agent.config import AgentStartupError
from hostnet.host.netlink import iproute, link_index
from hostnet.host.wireguard import (
    WgConfig,
    WireGuard,
    WireGuardError,
    ensure_host,
    merge_hosts,
    peers_for,
    public_key_of,
)
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)


class Tunnel:
    """This host's WireGuard interface, once `startup` read the provisioning file
    (`path`; None: no tunnel, one site only, and every call here is a no-op)."""

    def __init__(
        self, host: str, path: Path | None, *, host_exec: Executor, route_exec: Executor,
        key_switch_delay: float,
    ) -> None:
        self.host = host
        self.path = path
        self.host_exec = host_exec
        self.route_exec = route_exec
        self.key_switch_delay = key_switch_delay
        self.cfg: WgConfig | None = None
        self.wg: WireGuard | None = None
        self._ifindex: int | None = None  # of the interface as we last saw it
        # Hosts named by any of the controller's meshes: one a later mesh leaves out
        # was removed, and its entry in the provisioning file no longer counts.
        self._registered: set[str] = set()

    async def startup(self) -> None:
        """Bring up this host's side of the mesh before registering (the control path
        to a controller in another site goes through it)."""
        if self.path is None:
            return
        try:
            cfg = WgConfig.load(self.path)
            if cfg.name != self.host:
                raise AgentStartupError(f"{self.path} is for host {cfg.name}, not {self.host}")
            public, impl = await in_thread(self.host_exec, ensure_host, cfg)
            self.cfg = cfg
            self.wg = WireGuard(cfg.interface)
            self._ifindex = await in_thread(self.host_exec, self._index)
            await in_thread(self.route_exec, self.apply_mesh, [])
        except WireGuardError as exc:
            raise AgentStartupError(f"WireGuard: {exc}") from exc
        log.info("WireGuard %s (%s) tunnel %s public key %s", cfg.interface, impl,
                 cfg.address, public)

    def _index(self) -> int | None:
        assert self.cfg is not None
        with iproute() as ipr:
            return link_index(ipr, self.cfg.interface)

    def check(self) -> bool:
        """Whether the interface is the one we configured (host thread).  wireguard-go
        daemonizes, so nothing supervises it: if it ended, the interface is gone and
        we make it again (ensure_host); if someone made it again (`systemctl restart
        daolinet-wireguard`), it has a new index.  Either way its peers, allowed-ips
        and the routes through it are gone: True says the host's state must be
        applied again (the stream's next snapshot and mesh)."""
        if self.cfg is None:
            return False
        index = self._index()
        if index is None:
            log.warning("WireGuard interface %s is gone (wireguard-go ended?): making it "
                        "again", self.cfg.interface)
            ensure_host(self.cfg)
            index = self._index()
        if index == self._ifindex:
            return False
        log.warning("WireGuard interface %s is new (index %s, was %s): its peers and "
                    "routes are to be applied again", self.cfg.interface, index,
                    self._ifindex)
        self._ifindex = index
        return True

    def registration_fields(self) -> dict[str, Any]:
        """The WireGuard fields of this host's registration (host thread)."""
        cfg = self.cfg
        if cfg is None:
            return {}
        return {
            "wg_public_key": public_key_of(cfg.private_key_file),
            "wg_endpoint": cfg.endpoint,
            "tunnel_address": str(cfg.address.ip),
            "relay": cfg.relay,
        }

    def peer_count(self) -> int:
        return len(self.wg.peers) if self.wg else 0

    def apply_mesh(self, hosts: list[MeshHost]) -> None:
        """The controller's host list (route thread): peers = hosts of other sites.

        The provisioning file's hosts are the bootstrap mesh (the way to a controller
        in another site), joined with the controller's; a host the controller named
        before and no longer does was removed (`DELETE /hosts/{name}`): its file entry
        is ignored from then on, so its peer goes."""
        if self.wg is None or self.cfg is None:
            return
        names = {h.name for h in hosts}
        self._registered |= names
        removed = self._registered - names
        bootstrap = [h for h in self.cfg.hosts if h.name not in removed]
        merged = merge_hosts(bootstrap, hosts)
        public = public_key_of(self.cfg.private_key_file)
        self.wg.set_mesh(peers_for(self.cfg, public, merged))

    async def command(self, cmd: CommandMessage) -> Result:
        """wg-keygen: a new key pair (pending); wg-commit: switch to it shortly."""
        wg, cfg = self.wg, self.cfg
        try:
            if wg is None or cfg is None:
                raise WireGuardError(f"host {self.host} has no WireGuard interface")
            if cmd.op == "wg-keygen":
                # (not on the route thread: the stream connection lives there)
                public = await in_thread(self.host_exec, WireGuard.new_key, cfg.private_key_file)
                data: dict[str, Any] = {"public_key": public}
            elif cmd.op == "wg-commit":
                delay = float(cmd.args.get("delay", self.key_switch_delay))
                loop = asyncio.get_running_loop()
                loop.call_later(delay, self.host_exec.submit, self._commit_key)
                data = {"switch_in": delay}
            else:
                raise WireGuardError(f"unknown command {cmd.op}")
        except (WireGuardError, OSError, ValueError) as exc:
            log.error("command %s failed: %s", cmd.op, exc)
            return Result(seq=cmd.seq, ok=False, error=str(exc))
        log.info("command %s done", cmd.op)
        return Result(seq=cmd.seq, ok=True, data=data)

    def _commit_key(self) -> None:
        assert self.wg is not None and self.cfg is not None
        try:
            public = self.wg.commit_key(self.cfg.private_key_file)
        except (WireGuardError, OSError) as exc:
            log.error("WireGuard key switch failed: %s", exc)
            return
        log.info("WireGuard key switched; public key %s", public)
