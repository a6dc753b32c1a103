"""The ``daolinet-hostnet agent`` of each host and the containers attached through it.

A container is a network namespace ``dlt<id>c<name>`` attached with
``daolinet-hostnet attach`` (the agent creates its interface and reports it to the
controller).

Imports `procs`, `layout`, `hosts`, `controllers`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, MutableMapping, Sequence

import httpx

from .controllers import Controllers
from .hosts import (
    BRIDGE,
    Container,
    Host,
    HostBuilder,
    base_flows_installed,
    controller_connected,
    vsctl,
)
from .layout import Layout
from .procs import BIN_DIR, Processes, TestbedError, in_netns, mark_log, run, tail
from .registry import link_names


class Agents:
    """Starts the agents and attaches containers through them."""

    def __init__(
        self,
        layout: Layout,
        processes: Processes,
        controllers: Controllers,
        builder: HostBuilder,
        containers: MutableMapping[str, Container],
        *,
        ready_timeout: float,
        agent_args: Sequence[str] = (),
        docker_hosts: Sequence[str] = (),
        container_tx_off: bool = False,
    ) -> None:
        # `container_tx_off`: the agent turns tx checksum offload off on the container
        # side (netdev datapath); with it the testbed does it as well
        self._layout = layout
        self._processes = processes
        self._controllers = controllers
        self._builder = builder
        self._containers = containers
        self._ready_timeout = ready_timeout
        self._args = list(agent_args)
        self._docker_hosts = set(docker_hosts)
        self._container_tx_off = container_tx_off

    # ------------------------------------------------------------------ agents

    def _cmd(self, host: Host) -> list[str]:
        cmd = [
            str(BIN_DIR / "daolinet-hostnet"), "agent",
            "--controller", self._controllers.agent_urls(host),
            "--token-file", str(self._controllers.token_file),
            "--host", host.name,
            "--ovsdb", f"unix:{host.db_sock}",
            "--bridge", BRIDGE,
            "--address", host.address,
            "--socket", str(host.socket),
            "--datapath-type", "netdev",
        ]
        if host.site is not None:
            cmd += ["--site", host.site]
        if host.name in self._docker_hosts:
            # Docker looks for plugins in /run/docker/plugins, which the host's dockerd
            # sees as this host's own directory (see docker.py).
            host.plugin_socket.parent.mkdir(exist_ok=True)
            cmd += ["--plugin-socket", str(host.plugin_socket),
                    "--docker-host", f"unix://{host.docker_sock}",
                    "--state-dir", str(host.dir / "state")]
        else:
            cmd += ["--plugin-socket", ""]  # never the machine-wide default
        if self._layout.wireguard:
            cmd += ["--wireguard", str(host.wg_config)]
        cmd += self._controllers.tls_args(host.name, "host", [host.address])
        return [*cmd, *self._args]

    def start(self, host: Host, *, on_demand: bool = False) -> None:
        """Start the agent of `host`; `on_demand`: as systemd socket activation does
        (roles/hostnet's .socket unit), listening on the plugin socket and starting
        the agent with it at the first connection (`systemd-socket-activate`)."""
        env = host.ovs_env()
        env["PYTHONUNBUFFERED"] = "1"
        cmd = self._cmd(host)
        if on_demand:
            host.plugin_socket.unlink(missing_ok=True)  # a boot starts with an empty /run
            # It hands the agent only the variables named (--setenv=NAME: its own value).
            cmd = ["systemd-socket-activate", "-l", str(host.plugin_socket),
                   *(f"--setenv={name}" for name in sorted(env)), *cmd]
        host.agent = self._processes.spawn(
            host.ns, *cmd, what=f"agent {host.name}", log=host.agent_log, env=env,
        )

    def stop(self, host: Host, *, sig: int = signal.SIGTERM) -> None:
        if host.agent is not None:
            self._processes.stop(host.agent, sig=sig)
            host.agent = None

    def wait_ready(self, host: Host) -> None:
        assert host.agent is not None
        steps: list[tuple[str, Callable[[], bool]]] = [
            (f"agent of {host.name} does not answer on {host.socket}",
             lambda: agent_answers(host)),
            (f"agent of {host.name} did not create {BRIDGE}",
             lambda: vsctl(host, "--timeout=3", "br-exists", BRIDGE).returncode == 0
             and host.mgmt.exists()),
            (f"{BRIDGE} of {host.name} is not connected to the controller",
             lambda: controller_connected(host)),
            (f"host {host.name} is not registered (GET /api/v1/hosts)",
             lambda: self._controllers.registered(host)),
            (f"base flows (table 1 priority 0) missing on {host.name}",
             lambda: base_flows_installed(host)),
        ]
        deadline = time.monotonic() + self._ready_timeout
        for message, predicate in steps:
            self._processes.wait_proc(host.agent, predicate, message, host.agent_log,
                                      timeout=max(1.0, deadline - time.monotonic()),
                                      more_logs=[host.vswitchd_log, self._controllers.log])

    def restart(self, host: Host, *, sig: int = signal.SIGTERM, wait: bool = True) -> None:
        """Stop the agent of `host` and start it again; with `wait`, until it is ready."""
        if host.agent is not None:
            self._processes.stop(host.agent, sig=sig)
        mark_log(host.agent_log, "agent restart")
        self.start(host)
        if wait:
            self.wait_ready(host)

    # ------------------------------------------------------------------ containers

    def attach(self, host: Host, name: str, network: str, ip: str | None = None,
               mac: str | None = None) -> Container:
        """Create netns ``dlt<id>c<name>`` and attach it to `network` on `host`."""
        if name in self._containers:
            raise TestbedError(f"container {name!r} exists already")
        ns = self._layout.container_ns(name)
        self._builder.add_netns(ns)
        cmd = [str(BIN_DIR / "daolinet-hostnet"), "attach", "--socket", str(host.socket),
               "--netns", ns, "--network", network, "--name", name]
        if ip:
            cmd += ["--ip", ip]
        if mac:
            cmd += ["--mac", mac]
        res = run(in_netns(host.ns, [*cmd, "--json"]), timeout=30)
        if res.returncode != 0:
            raise TestbedError(
                f"attach of {name} on {host.name} failed (rc={res.returncode}):\n"
                f"{res.stdout}{res.stderr}\n--- {host.agent_log} ---\n{tail(host.agent_log, 20)}"
            )
        try:
            endpoint = json.loads(res.stdout[res.stdout.index("{"):])
        except ValueError as exc:
            raise TestbedError(f"attach --json printed no JSON: {res.stdout!r}") from exc
        ifnames = interfaces(ns)
        if not ifnames:
            raise TestbedError(f"attach of {name} left no interface in {ns}")
        if self._container_tx_off:
            for ifname in ifnames:
                run(in_netns(ns, ["ethtool", "-K", ifname, "tx", "off"]))
        c = Container(
            name=name, ns=ns, ip=str(endpoint["ip"]).split("/")[0], mac=str(endpoint["mac"]),
            host=host.name, network=network, endpoint=endpoint, ifnames=ifnames,
        )
        self._containers[name] = c
        return c

    def detach(self, host: Host, container: Container) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN_DIR / "daolinet-hostnet"), "detach", "--socket", str(host.socket),
               container.name]
        res = run(in_netns(host.ns, cmd), timeout=30)
        if res.returncode == 0:
            self._containers.pop(container.name, None)
        return res


def agent_answers(host: Host) -> bool:
    """True when something answers HTTP on the agent's unix socket."""
    transport = httpx.HTTPTransport(uds=str(host.socket))
    with httpx.Client(transport=transport, timeout=2.0) as client:
        client.get("http://agent/")
    return True


def interfaces(ns: str) -> list[str]:
    """Non-loopback interfaces of a namespace."""
    return [n for n in link_names(ns) if n != "lo"]
