"""The hosts of a testbed: a network namespace on its site's underlay, its own
``ovsdb-server`` and ``ovs-vswitchd`` (userspace datapath ``netdev``, own db file and
run directory), and what a test reads of it: OVS's database, the flows of ``br-dl``
and the kernel routes the agent made.

Imports `procs`, `registry`, `layout`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import Layout
from .procs import OVS_SCHEMA, Proc, Processes, TestbedError, in_netns, mark_log, run
from .registry import Registry

BRIDGE = "br-dl"
GATEWAY_MAC = "02:da:00:00:00:01"
ROUTE_PROTO = 211

# Cookie kinds (top byte), see docs/architecture.md.
COOKIE_CONNECTION = 0xD1
COOKIE_DENY = 0xDD

# Flow priorities of table 1.
PRIO_CONNECTION = 100
PRIO_MISS = 0


@dataclass
class Host:
    name: str
    index: int
    ns: str
    address: str
    dir: Path
    veth: str  # root-namespace end of the underlay veth
    site: str | None = None
    tunnel: str | None = None  # WireGuard tunnel address (Testbed(wireguard=True))
    wg_if: str | None = None
    wg_public_key: str | None = None
    ovsdb: Proc | None = None
    vswitchd: Proc | None = None
    agent: Proc | None = None

    @property
    def db_sock(self) -> Path:
        return self.dir / "db.sock"

    @property
    def mgmt(self) -> Path:
        return self.dir / f"{BRIDGE}.mgmt"

    @property
    def socket(self) -> Path:
        return self.dir / "hostnet.sock"

    @property
    def plugin_socket(self) -> Path:
        """The Docker plugin socket (served only on hosts of `Testbed(docker_hosts=...)`)."""
        return self.dir / "plugins" / "daolinet.sock"

    @property
    def docker_sock(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def vswitchd_log(self) -> Path:
        return self.dir / "ovs-vswitchd.log"

    @property
    def ovsdb_log(self) -> Path:
        return self.dir / "ovsdb-server.log"

    @property
    def wg_config(self) -> Path:
        """What `daolinet-hostnet wg-up` and the agent read (Testbed(wireguard=True))."""
        return self.dir / "wireguard.json"

    def ovs_env(self) -> dict[str, str]:
        """The environment of the OVS tools (and the agent) of this host's instance."""
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"):
            env[var] = str(self.dir)
        return env

    def __str__(self) -> str:
        return self.name


@dataclass
class Container:
    name: str
    ns: str
    ip: str
    mac: str
    host: str
    network: str
    endpoint: dict[str, Any]
    ifnames: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.name}({self.ip}@{self.host})"


Target = Host | Container | str


@dataclass
class Flow:
    """One line of ``ovs-ofctl dump-flows``, parsed."""

    raw: str
    cookie: int = 0
    table: int = 0
    priority: int = 32768
    match: str = ""
    actions: str = ""
    idle_timeout: int | None = None
    hard_timeout: int | None = None
    n_packets: int = 0
    flags: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> int:
        return self.cookie >> 56

    @classmethod
    def parse(cls, line: str) -> Flow:
        text = line.strip()
        head, sep, actions = text.rpartition(" actions=")
        if not sep:
            head, actions = text, ""
        flow = cls(raw=text, actions=actions)
        match_parts: list[str] = []
        flag_words = {"send_flow_rem", "check_overlap", "reset_counts", "no_packet_counts",
                      "no_byte_counts"}
        ints = {"cookie", "table", "priority", "idle_timeout", "hard_timeout", "n_packets"}
        for part in head.replace(", ", ",").replace(" ", ",").split(","):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if key in ints:
                setattr(flow, key, int(value, 0) if key == "cookie" else int(value))
            elif key in {"duration", "n_bytes", "idle_age", "hard_age", "importance"}:
                continue
            elif not eq and key in flag_words:
                flow.flags += (key,)
            else:
                match_parts.append(part)
                flow.fields[key] = value
        flow.match = ",".join(match_parts)
        return flow


@dataclass
class KernelRoute:
    raw: str
    dst: str
    via: str | None = None
    dev: str | None = None

    @classmethod
    def parse(cls, line: str) -> KernelRoute:
        words = line.split()
        route = cls(raw=line, dst=words[0].removesuffix("/32"))
        for key, value in itertools.pairwise(words):
            if key == "via":
                route.via = value
            elif key == "dev":
                route.dev = value
        return route


# --------------------------------------------------------------------------- reading a host


def vsctl(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["ovs-vsctl", f"--db=unix:{host.db_sock}", *args], timeout=10)


def flows(host: Host, table: int | None = None) -> list[str]:
    """Lines of `ovs-ofctl -O OpenFlow13 dump-flows` on the host's br-dl."""
    cmd = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{host.mgmt}"]
    if table is not None:
        cmd.append(f"table={table}")
    res = run(cmd, timeout=10, check=True)
    return [
        line.strip() for line in res.stdout.splitlines()
        if line.strip() and not line.startswith(("OFPST_FLOW", "NXST_FLOW"))
    ]


def parsed_flows(host: Host, table: int | None = None) -> list[Flow]:
    return [Flow.parse(line) for line in flows(host, table)]


def base_flows_installed(host: Host) -> bool:
    return any(f.table == 1 and f.priority == PRIO_MISS for f in parsed_flows(host, 1))


def kernel_routes(host: Host) -> list[str]:
    """`ip -4 route show proto 211` in the host namespace."""
    cmd = ["ip", "-4", "route", "show", "proto", str(ROUTE_PROTO)]
    res = run(in_netns(host.ns, cmd), check=True)
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def via_routes(host: Host) -> list[KernelRoute]:
    return [r for r in map(KernelRoute.parse, kernel_routes(host)) if r.via]


def is_idle(host: Host) -> bool:
    """No flow above priority 0 in table 1, no `via` route."""
    return all(f.priority == PRIO_MISS for f in parsed_flows(host, 1)) and not via_routes(host)


def state_dump(host: Host) -> str:
    """Table 1 and the kernel routes, for a failure's report."""
    try:
        table1 = "\n  ".join(flows(host, 1))
    except Exception as exc:
        table1 = f"<{exc}>"
    try:
        routes = "\n  ".join(kernel_routes(host))
    except Exception as exc:
        routes = f"<{exc}>"
    return f"{host.name} table 1:\n  {table1}\n{host.name} routes:\n  {routes}"


def controller_connected(host: Host) -> bool:
    out = vsctl(host, "--timeout=3", "--bare", "--columns=is_connected", "list",
                "Controller").stdout
    return "true" in out.split()


def controller_roles(host: Host) -> dict[str, str]:
    """OVS's view of the bridge's controllers: target -> role (master/slave/other),
    of the connected ones."""
    out = vsctl(host, "--timeout=3", "-f", "json", "--columns=target,role,is_connected",
                "list", "Controller").stdout
    roles: dict[str, str] = {}
    for target, role, connected in json.loads(out or '{"data": []}')["data"]:
        if connected is True:
            roles[str(target)] = role if isinstance(role, str) else "other"
    return roles


# --------------------------------------------------------------------------- building a host


class HostBuilder:
    """Makes a host: its namespace, its veth on the underlay, its OVS instance."""

    def __init__(self, layout: Layout, registry: Registry, processes: Processes,
                 ovs_other_config: Mapping[str, str] | None = None) -> None:
        # `ovs_other_config`: Open_vSwitch other_config keys written before
        # ovs-vswitchd starts (some, such as `userspace-tso-enable`, are read only then)
        self._layout = layout
        self._registry = registry
        self._processes = processes
        self._ovs_other_config = dict(ovs_other_config or {})

    def add_netns(self, ns: str, *, ipv4_only: bool = False) -> None:
        """A new network namespace (recorded first) with its loopback up; `ipv4_only`
        for the site underlays, which carry IPv4 only (no router solicitations)."""
        self._registry.add_netns(ns)
        run(["ip", "netns", "add", ns], check=True)
        self.exec(ns, "ip", "link", "set", "lo", "up")
        if ipv4_only:
            self.exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                      "net.ipv6.conf.default.disable_ipv6=1")

    def add_link(self, name: str, *args: str, ipv4_only: bool = False) -> None:
        """`ip link add NAME ARGS` in the root namespace (recorded first)."""
        self._registry.add_link(name)
        run(["ip", "link", "add", name, *args], check=True)
        if ipv4_only:  # no IPv6 on a root-namespace link of a site underlay
            with_no_ipv6(name)

    def exec(self, ns: str, *cmd: str, input: str | None = None) -> None:
        run(in_netns(ns, cmd), check=True, input=input)

    def plug(self, ns: str, veth: str, address: str, bridge: str, *,
             ipv4_only: bool = False) -> None:
        """A new namespace `ns` whose eth0 (`address`/24) is on the underlay `bridge`
        through a veth (root end `veth`)."""
        self.add_netns(ns, ipv4_only=ipv4_only)
        self.add_link(veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                      ipv4_only=ipv4_only)
        run(["ip", "link", "set", veth, "master", bridge, "up"], check=True)
        self.exec(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self.exec(ns, "ip", "link", "set", "eth0", "up")

    def build(self, index: int, name: str, workdir: Path) -> Host:
        lay = self._layout
        ns = lay.host_ns(index)
        hdir = workdir / name
        hdir.mkdir()
        host = Host(name=name, index=index, ns=ns, address=lay.host_address(index, name),
                    dir=hdir, veth=f"{ns}u", site=lay.host_site(name))
        if lay.wireguard:
            host.tunnel = lay.tunnel_address(index)
            host.wg_if = lay.wg_interface(index)
        self.plug(ns, host.veth, host.address, lay.host_bridge(name), ipv4_only=lay.wireguard)
        if lay.wireguard:
            gw = ".".join([*host.address.split(".")[:3], "254"])
            self.exec(ns, "ip", "route", "add", "default", "via", gw)
        self._start_ovs(host)
        return host

    def _start_ovs(self, host: Host) -> None:
        d = host.dir
        db = d / "conf.db"
        run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)], check=True)
        env = host.ovs_env()
        host.ovsdb = self._processes.spawn(
            host.ns,
            "ovsdb-server", str(db),
            f"--remote=punix:{host.db_sock}",
            f"--unixctl={d / 'ovsdb-server.ctl'}",
            f"--pidfile={d / 'ovsdb-server.pid'}",
            f"--log-file={host.ovsdb_log}",
            what=f"ovsdb-server {host.name}",
            env=env,
            log=d / "ovsdb-server.out",
        )
        self._processes.wait_proc(
            host.ovsdb,
            lambda: vsctl(host, "--timeout=2", "--no-wait", "init").returncode == 0,
            f"ovsdb-server of {host.name} did not answer on {host.db_sock}",
            host.ovsdb_log,
            timeout=15,
        )
        if self._ovs_other_config:
            res = vsctl(host, "--timeout=5", "--no-wait", "set", "Open_vSwitch", ".",
                        *(f"other_config:{k}={v}"
                          for k, v in sorted(self._ovs_other_config.items())))
            if res.returncode != 0:
                raise TestbedError(f"other_config on {host.name}: {res.stderr.strip()}")
        self.start_vswitchd(host)

    def restart_vswitchd(self, host: Host) -> None:
        """Stop ovs-vswitchd of `host` (SIGTERM, as `systemctl restart
        ovs-vswitchd` does) and start it again on the same database."""
        if host.vswitchd is not None:
            self._processes.stop(host.vswitchd)
        mark_log(host.vswitchd_log, "ovs-vswitchd restart")
        self.start_vswitchd(host)

    def start_vswitchd(self, host: Host) -> None:
        d = host.dir
        env = host.ovs_env()
        host.vswitchd = self._processes.spawn(
            host.ns,
            "ovs-vswitchd", f"unix:{host.db_sock}",
            f"--unixctl={d / 'ovs-vswitchd.ctl'}",
            f"--pidfile={d / 'ovs-vswitchd.pid'}",
            f"--log-file={host.vswitchd_log}",
            what=f"ovs-vswitchd {host.name}",
            env=env,
            log=d / "ovs-vswitchd.out",
        )
        self._processes.wait_proc(
            host.vswitchd,
            lambda: run(
                ["ovs-appctl", "-t", str(d / "ovs-vswitchd.ctl"), "version"], timeout=3
            ).returncode == 0
            and vsctl(host, "--timeout=3", "init").returncode == 0,
            f"ovs-vswitchd of {host.name} did not come up",
            host.vswitchd_log,
            timeout=15,
        )


def with_no_ipv6(link: str) -> None:
    """No IPv6 on a root-namespace link of a site underlay (IPv4 only on the wire)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")
