"""The `Testbed` facade: N daolinet hosts and a controller on one machine, built and torn
down as one, with the helpers the tests call.  It wires the parts (registry, layout,
hosts, underlay and sites, controllers, agents, traffic) and delegates to them; what
each part does is said in its module.

Imports every other module of the package but `docker`.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import signal
import ssl
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.pki import TestCA

from . import hosts as hostview
from .agents import Agents, interfaces
from .controllers import Controllers, items
from .hosts import Container, Flow, Host, HostBuilder, KernelRoute, Target
from .layout import Layout
from .procs import (
    Proc,
    Processes,
    TestbedError,
    exit_on_sigterm,
    in_netns,
    mark_log,
    run,
    tail,
    wait_until,
)
from .registry import PREFIX, Registry
from .sites import Underlay, WireGuard
from .traffic import Targets, Traffic

T = TypeVar("T")


@dataclass
class _Parts:
    """What exists once the testbed has its id and subnets."""

    registry: Registry
    layout: Layout
    processes: Processes
    builder: HostBuilder
    underlay: Underlay
    wireguard: WireGuard
    traffic: Traffic
    controllers: Controllers
    agents: Agents


class Testbed:
    """N hosts + a controller on one machine. Use as a context manager or call
    :meth:`start` / :meth:`close` (close is idempotent and runs at interpreter exit)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        hosts: int | Sequence[str] = 2,
        *,
        idle_timeout: float = 3.0,
        daolinet: bool = True,
        sites: dict[str, str] | None = None,
        controller_args: Sequence[str] = (),
        agent_args: Sequence[str] = (),
        container_tx_off: bool = False,
        ready_timeout: float = 30.0,
        keep_dir: bool | None = None,
        docker_hosts: Sequence[str] = (),
        wireguard: bool = False,
        nat_sites: Sequence[str] = (),
        relays: Sequence[str] = (),
        replicas: int = 1,
        store: str | Sequence[str] | None = None,
        replica_site: str | None = None,
        replica_remote_ip: str | None = None,
        ovs_other_config: dict[str, str] | None = None,
        tls: bool = False,
        ca: TestCA | None = None,
        etcd_ca: TestCA | None = None,
    ) -> None:
        # `tls`: certificates from a test CA (`ca`, else its own), switches over TLS;
        # `etcd_ca`: the etcd cluster's own CA (EtcdCluster.ca), needed with `tls` and
        # an etcd store: it issues the replicas' etcd client certificates (see
        # Controllers)
        # `store`: one URL for every replica, or one per replica (e.g. a replica that
        # reaches etcd through a proxy a test can cut); see Controllers for
        # `replica_site`, `replica_remote_ip`; HostBuilder for `ovs_other_config`
        stores = [store] * replicas if store is None or isinstance(store, str) else list(store)
        if len(stores) != replicas:
            raise ValueError(f"{len(stores)} store URLs for {replicas} replicas")
        if replicas > 1 and not all((u or "").startswith("etcd:") for u in stores):
            raise ValueError("controller replicas need an etcd store URL (store=...)")
        if tls and etcd_ca is None and any((u or "").startswith("etcd:") for u in stores):
            raise ValueError("a testbed with tls and an etcd store needs etcd_ca (the etcd "
                             "cluster's own CA, EtcdCluster.ca)")
        names = [f"h{i}" for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        if not names:
            raise ValueError("a testbed needs at least one host")
        self._host_names = names
        self._sites = dict(sites or {})
        self.idle_timeout = idle_timeout
        self.daolinet = daolinet
        self.replicas = replicas
        self._store_urls: list[str | None] = list(stores)
        self._controller_args = list(controller_args)
        self._agent_args = list(agent_args)
        self._container_tx_off = container_tx_off
        self._docker_hosts = list(docker_hosts)
        self._wireguard = wireguard
        self._nat_sites = list(nat_sites)
        self._relays = list(relays)
        self._ready_timeout = ready_timeout
        self._replica_site = replica_site
        self._replica_remote_ip = replica_remote_ip
        self._ovs_other_config = dict(ovs_other_config or {})
        self._tls = tls
        self._ca = ca
        self._etcd_ca = etcd_ca
        self._keep_dir = bool(os.environ.get("DLT_KEEP")) if keep_dir is None else keep_dir

        self.hosts: dict[str, Host] = {}
        self.containers: dict[str, Container] = {}
        self._targets = Targets(self.hosts, self.containers)
        self._parts: _Parts | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ parts

    @property
    def _p(self) -> _Parts:
        if self._parts is None:
            raise TestbedError("the testbed has not started")
        return self._parts

    # ------------------------------------------------------------------ names/addresses

    @property
    def id(self) -> str:
        return self._parts.layout.id if self._parts else ""

    @property
    def octet(self) -> int:
        return self._parts.layout.octet if self._parts else 0

    @property
    def dir(self) -> Path:
        return self._parts.registry.dir if self._parts else Path()

    @property
    def bridge(self) -> str:
        return self._p.layout.bridge

    @property
    def controller_ip(self) -> str:
        return self._p.layout.controller_ip

    @property
    def underlay(self) -> ipaddress.IPv4Network:
        return self._p.layout.underlay

    @property
    def site_names(self) -> list[str]:
        """Sites in the order of their first host (the first is the controller's)."""
        return self._p.layout.site_names

    @property
    def registry_file(self) -> Path:
        return self._p.registry.file

    def nat_address(self, site: str) -> str:
        """The public (outside) address of a NAT site's router."""
        return self._p.layout.nat_address(site)

    def router_leg(self, site: str) -> tuple[str, str]:
        """(netns, interface) of the core router's link towards `site`."""
        return self._p.layout.router_leg(site)

    def host(self, host: Host | str) -> Host:
        if isinstance(host, Host):
            return host
        try:
            return self.hosts[host]
        except KeyError:
            raise TestbedError(f"no host {host!r}; hosts are {list(self.hosts)}") from None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Testbed:
        if self._started:
            return self
        self._started = True
        atexit.register(self.close)
        exit_on_sigterm()
        try:
            p = self._allocate()
            p.underlay.build()
            for index, name in enumerate(p.layout.host_names, start=1):
                self._build_host(index, name)
            if self._wireguard:
                p.wireguard.provision()
            if self.daolinet:
                # One controller: the agents start while it does, as at a boot.  Each
                # process spends seconds importing (a testbed's start took ~30 s, two
                # thirds of it waiting on the controller, then on the agents); an
                # agent retries its registration until the controller answers.
                # Replicas keep their order: each serves before the next starts, and
                # the agents start once all do.
                alone = p.controllers.replicas == 1
                p.controllers.start(wait=not alone)
                for host in self.hosts.values():
                    p.agents.start(host)
                if alone:
                    p.controllers.wait_started()
                for host in self.hosts.values():
                    p.agents.wait_ready(host)
        except BaseException:
            self.close()
            raise
        return self

    def _allocate(self) -> _Parts:
        """Take an id and subnets, and make the parts (nothing runs yet)."""
        registry, octets = Registry.create(
            Layout.subnets_needed(self._host_names, self._sites, self._wireguard),
            self._keep_dir)
        workdir = registry.dir
        layout = Layout(registry.id, octets, self._host_names, self._sites,
                        wireguard=self._wireguard, nat_sites=self._nat_sites)
        processes = Processes(workdir, registry)
        builder = HostBuilder(layout, registry, processes, self._ovs_other_config)
        controllers = Controllers(
            layout, processes, self.hosts, workdir, store_urls=self._store_urls,
            idle_timeout=self.idle_timeout, ready_timeout=self._ready_timeout,
            controller_args=self._controller_args, replica_site=self._replica_site,
            replica_remote_ip=self._replica_remote_ip, tls=self._tls, ca=self._ca,
            etcd_ca=self._etcd_ca,
        )
        self._parts = _Parts(
            registry=registry, layout=layout, processes=processes, builder=builder,
            underlay=Underlay(layout, builder),
            wireguard=WireGuard(layout, self.hosts, self._relays),
            traffic=Traffic(self._targets, processes, workdir),
            controllers=controllers,
            agents=Agents(
                layout, processes, controllers, builder, self.containers,
                ready_timeout=self._ready_timeout, agent_args=self._agent_args,
                docker_hosts=self._docker_hosts, container_tx_off=self._container_tx_off,
            ),
        )
        return self._parts

    def _build_host(self, index: int, name: str) -> Host:
        host = self._p.builder.build(index, name, self.dir)
        self.hosts[name] = host
        return host

    def add_host(self, name: str, site: str) -> Host:
        """A host joining later: its WireGuard peer on the controller's host (the one it
        needs to register), then its agent; other hosts learn it from the controller."""
        p = self._p
        h = self._build_host(p.layout.add_host(name, site), name)
        if self._wireguard:
            p.wireguard.provision([h])
            p.wireguard.wg_up(self.hosts[p.layout.host_names[0]])  # Ansible: every host
        p.agents.start(h)
        p.agents.wait_ready(h)
        return h

    def add_namespace(self, suffix: str, address: str) -> str:
        """A namespace ``dlt<id><suffix>`` on the (first site's) underlay that is no
        daolinet host (a machine outside), eth0 `address`/24; its name."""
        ns = f"{PREFIX}{self.id}{suffix}"
        self._p.builder.plug(ns, f"{ns}u", address, self.bridge)
        return ns

    def adopt_netns(self, ns: str) -> None:
        """Record a namespace made elsewhere (`ip netns attach`) for teardown/cleanup."""
        self._p.registry.add_netns(ns)

    def resources(self) -> dict[str, list[Any]]:
        """What of this testbed still exists (netns, root links, live processes)."""
        return self._p.registry.resources(self._p.processes.every)

    def close(self) -> None:
        if self._closed or not self._started:
            return
        self._closed = True
        errors: list[str] = []
        if self._parts is not None:
            # containers first (their processes), then agents, controller, OVS
            errors += self._parts.processes.stop_all()
            self._parts.underlay.remove_rules()
            self._parts.controllers.close()
            errors += self._parts.registry.remove()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if errors:
            raise TestbedError("teardown problems: " + "; ".join(errors))

    # ------------------------------------------------------------------ processes

    def spawn(self, ns: Target | None, *cmd: str, what: str | None = None,
              log: Path | None = None, env: dict[str, str] | None = None) -> Proc:
        """Start `cmd` (inside `ns` unless None), tracked for teardown (see Processes)."""
        netns = self._targets.ns_of(ns)
        return self._p.processes.spawn(netns, *cmd, what=what, log=log, env=env)

    def stop(self, proc: Proc, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the whole process group of `proc`; SIGKILL after `timeout`."""
        self._p.processes.stop(proc, sig=sig, timeout=timeout)

    def exec(self, ns: Target | None, *cmd: str, timeout: float = 10.0, check: bool = False,
             input: str | None = None, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside `ns` (a netns name, Host, Container, or None for the root)."""
        return run(in_netns(self._targets.ns_of(ns), cmd), timeout=timeout, check=check,
                   input=input, env=env)

    def vsctl(self, host: Host | str, *args: str) -> subprocess.CompletedProcess[str]:
        return hostview.vsctl(self.host(host), *args)

    def wg_dump(self, host: Host | str) -> list[dict[str, Any]]:
        """The peers of a host's WireGuard interface (`wg show IF dump`)."""
        return self._p.wireguard.dump(self.host(host))

    # ------------------------------------------------------------------ controller replicas

    @property
    def replica_procs(self) -> list[Proc | None]:
        return self._parts.controllers.procs if self._parts else []

    @property
    def token(self) -> str:
        return self._parts.controllers.token if self._parts else ""

    @property
    def api_url(self) -> str:
        return self._p.controllers.api_url

    def replica_url(self, i: int) -> str:
        return self._p.controllers.replica_url(i)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client of the API verifies the controller with (`httpx`'s `verify`):
        the testbed's CA with `tls`, where the API is HTTPS."""
        return self._p.controllers.verify

    def replica_log(self, i: int) -> Path:
        return self._p.controllers.replica_log(i)

    @property
    def ca(self) -> TestCA | None:
        """The test CA of a testbed with `tls` (None without)."""
        return self._p.controllers.ca

    def openflow_target(self, i: int, *, remote: bool = False) -> str:
        return self._p.controllers.openflow_target(i, remote=remote)

    def free_port(self) -> int:
        """A TCP port free on the controller's address (for another OpenFlow listener)."""
        return self._p.controllers.free_port()

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Stop controller replica `i` (SIGKILL: a crash)."""
        self._p.controllers.kill_replica(i, sig)

    def start_replica(self, i: int) -> None:
        """Start controller replica `i` again (same store, token, ports)."""
        self._p.controllers.start_replica(i)

    def restart_controller(self, *, sig: int = signal.SIGTERM, wait: bool = True) -> None:
        """Stop the controller (SIGKILL: a crash) and start it again (see Controllers)."""
        self._p.controllers.restart(sig=sig, wait=wait)

    def restart_vswitchd(self, host: Host | str) -> None:
        """Restart `host`'s ovs-vswitchd (SIGTERM, then start on the same database)."""
        self._p.builder.restart_vswitchd(self.host(host))

    def restart_agent(self, host: Host | str, *, sig: int = signal.SIGTERM,
                      wait: bool = True) -> None:
        """Stop the agent of `host` and start it again; with `wait`, until it is ready."""
        self._p.agents.restart(self.host(host), sig=sig, wait=wait)

    def stop_agent(self, host: Host | str, *, sig: int = signal.SIGTERM) -> None:
        self._p.agents.stop(self.host(host), sig=sig)

    def start_agent(self, host: Host | str, *, on_demand: bool = False,
                    wait: bool = True) -> None:
        """Start the agent of `host` again (`on_demand`: at the first connection to its
        plugin socket, as systemd socket activation does); with `wait`, until ready."""
        mark_log(self.host(host).agent_log, "agent start")
        self._p.agents.start(self.host(host), on_demand=on_demand)
        if wait:
            self._p.agents.wait_ready(self.host(host))

    def controller_roles(self, host: Host | str) -> dict[str, str]:
        """OVS's view of the bridge's controllers: target -> role, of the connected ones."""
        return hostview.controller_roles(self.host(host))

    def replica_gauge(self, i: int, name: str) -> int:
        """A gauge of replica `i`'s /metrics (0 when it does not answer)."""
        return self._p.controllers.replica_gauge(i, name)

    def master_of(self, host: Host | str) -> list[int]:
        """The replicas that are OpenFlow master of the host's bridge, as OVS says."""
        return self._p.controllers.master_of(self.host(host))

    def confirmed_masters(self, without: int | None = None) -> dict[str, int] | None:
        """host -> the one replica that confirmed it masters the host's switch."""
        return self._p.controllers.confirmed_masters(without)

    def wait_masters(self, timeout: float = 10.0, *, without: int | None = None,
                     interval: float = 0.05) -> dict[str, int]:
        """Wait until every switch has exactly one confirmed master (not `without`)."""
        return self._p.controllers.wait_masters(timeout, without=without, interval=interval)

    def kill_master(self, host: str, timeout: float = 10.0
                    ) -> tuple[int, dict[str, int], dict[str, int], float]:
        """SIGKILL the replica that masters `host`'s switch (see Controllers)."""
        return self._p.controllers.kill_master(host, timeout)

    def roles_dump(self) -> str:
        return self._p.controllers.roles_dump()

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        """Call the controller API (see Controllers.api)."""
        return self._p.controllers.api(method, path, json, **kwargs)

    def api_json(self, method: str, path: str, json: Any = None) -> Any:
        return self._p.controllers.api_json(method, path, json)

    def create_network(self, name: str, subnet: str, gateway: str | None = None) -> Any:
        body = {"name": name, "subnet": subnet} | ({"gateway": gateway} if gateway else {})
        return self.api_json("POST", "/networks", body)

    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        """GET /api/v1/routes: the live connections."""
        return items(self.api_json("GET", "/routes" + (f"?host={host}" if host else "")))

    # ------------------------------------------------------------------ containers

    def container(self, host: Host | str, name: str, network: str, ip: str | None = None,
                  mac: str | None = None) -> Container:
        """Create netns ``dlt<id>c<name>`` and attach it to `network` on `host`."""
        return self._p.agents.attach(self.host(host), name, network, ip, mac)

    def detach(self, container: Container | str) -> subprocess.CompletedProcess[str]:
        c = container if isinstance(container, Container) else self.containers[container]
        return self._p.agents.detach(self.host(c.host), c)

    def interfaces(self, ns: Target) -> list[str]:
        """Non-loopback interfaces of a namespace."""
        return interfaces(self._targets.ns_of(ns) or "")

    # ------------------------------------------------------------------ traffic

    def ping(self, src: Target, dst_ip: Target, count: int = 1, timeout: float = 2.0,
             interval: float = 0.2, all_replies: bool = False) -> bool:
        """A reply (every reply with `all_replies`) to `ping -c count` from `src`."""
        return self._p.traffic.ping(src, dst_ip, count, timeout, interval, all_replies)

    def listen(self, dst: Target, port: int, udp: bool) -> tuple[Proc, Path]:
        """An nc listener in dst's netns (stop it with `stop`) and its output file."""
        return self._p.traffic.listen(dst, port, udp)

    def tcp_connect(self, src: Target, dst: Target, port: int = 5001,
                    timeout: float = 5.0) -> float | None:
        """Seconds a TCP connection src → dst:port carrying a line took, None if failed."""
        return self._p.traffic.tcp_connect(src, dst, port, timeout)

    def tcp_ok(self, src: Target, dst: Target, port: int = 5001, timeout: float = 5.0) -> bool:
        """A TCP connection src → dst:port carries data (nc listener in dst's netns)."""
        return self.tcp_connect(src, dst, port, timeout) is not None

    def udp_ok(self, src: Target, dst: Target, port: int = 5002, timeout: float = 3.0) -> bool:
        """One UDP datagram src → dst:port arrives (nc -u listener in dst's netns)."""
        return self._p.traffic.udp_ok(src, dst, port, timeout)

    def traceroute(self, src: Target, dst_ip: Target, max_hops: int = 5) -> list[str | None]:
        """Hop addresses of `traceroute -n -q1 -w1 -m5` (None for a `*`)."""
        return self._p.traffic.traceroute(src, dst_ip, max_hops)

    def iperf3(self, src: Target, dst: Target, seconds: float = 2, port: int = 5201,
               extra: Sequence[str] = ()) -> dict[str, Any]:
        """Run an iperf3 test src → dst; return the client's JSON result."""
        return self._p.traffic.iperf3(src, dst, seconds, port, extra)

    # ------------------------------------------------------------------ switch/kernel state

    def flows(self, host: Host | str, table: int | None = None) -> list[str]:
        """Lines of `ovs-ofctl -O OpenFlow13 dump-flows` on the host's br-dl."""
        return hostview.flows(self.host(host), table)

    def parsed_flows(self, host: Host | str, table: int | None = None) -> list[Flow]:
        return hostview.parsed_flows(self.host(host), table)

    def connection_flows(self, host: Host | str) -> list[Flow]:
        """Per-connection flows: table 1, priority 100."""
        return [f for f in self.parsed_flows(host, 1) if f.priority == hostview.PRIO_CONNECTION]

    def kernel_routes(self, host: Host | str) -> list[str]:
        """`ip -4 route show proto 211` in the host namespace."""
        return hostview.kernel_routes(self.host(host))

    def parsed_kernel_routes(self, host: Host | str) -> list[KernelRoute]:
        return [KernelRoute.parse(line) for line in self.kernel_routes(host)]

    def via_routes(self, host: Host | str) -> list[KernelRoute]:
        return hostview.via_routes(self.host(host))

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every connection has expired everywhere."""
        limit = timeout if timeout is not None else self.idle_timeout * 3 + 15
        self.wait_until(lambda: all(map(hostview.is_idle, self.hosts.values())), limit,
                        "connections did not expire",
                        detail=self.state_dump)

    def wait_until(self, predicate: Callable[[], T], timeout: float, message: str,
                   interval: float = 0.1, detail: Callable[[], str] | None = None) -> T:
        return wait_until(predicate, timeout, message, interval, detail)

    # ------------------------------------------------------------------ diagnostics

    def state_dump(self) -> str:
        return "\n".join(map(hostview.state_dump, self.hosts.values()))

    def log_tails(self, lines: int = 30) -> str:
        logs: list[Path] = []
        if self.daolinet:
            logs.append(self._p.controllers.log)
        for h in self.hosts.values():
            logs += [h.agent_log, h.vswitchd_log] if self.daolinet else [h.vswitchd_log]
        return "\n".join(f"--- {p} ---\n{tail(p, lines)}" for p in logs)
