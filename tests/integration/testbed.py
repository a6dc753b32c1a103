"""An integration testbed: N daolinet "hosts" on one machine.

Layout (names start with ``dlt<id>``, ``<id>`` = 4 random hex digits per testbed)::

    root netns                      host netns dlt<id>hN                container netns
    dlt<id>ul (Linux bridge)        eth0 198.18.X.(10+N)/24             dlt<id>c<name>
      198.18.X.1/24  ──veth── dlt<id>hNu   ovsdb-server, ovs-vswitchd       eth0 (from the agent)
      daolinet-controller              daolinet-hostnet agent (br-dl, netdev)

* The underlay is a Linux bridge in the root namespace; every host is a network
  namespace joined to it by a veth and runs its own ``ovsdb-server`` and
  ``ovs-vswitchd`` (userspace datapath ``netdev``), each with its own db file and
  run directory, plus the real ``daolinet-hostnet agent``.
* The controller runs in the root namespace and listens on 198.18.X.1.
* Containers are network namespaces attached through ``daolinet-hostnet attach``.

Everything created is recorded in a registry file (``/run/dlt-testbed/<id>.json``)
before it is created, so :func:`cleanup_leftovers` can remove what a crashed run left
behind without touching a testbed that another live process is using.

Only the 198.18.0.0/15 benchmark range (RFC 2544) is used for the underlay, and all
traffic stays inside the namespaces and veths of the testbed.

Sites (``Testbed(sites={...}, wireguard=True)``): every site has its own underlay
segment (site of the first host: ``dlt<id>ul``, 198.18.X.0/24; others ``dlt<id>u<i>``,
198.18.Y.0/24), joined by a router namespace ``dlt<id>r`` (198.18.Y.254 on each,
forwarding, ICMP dropped).  A site in ``nat_sites`` sits behind its own NAT router
``dlt<id>n<i>`` (nftables masquerade, reached by the core router over a /30 of
198.18.T.0/24; nothing routes to the inside).  Every host has a WireGuard interface
``dlt<id>w<N>`` (wireguard-go), tunnel address 198.19.X.(10+N)/24, provisioned with
``daolinet-hostnet wg-up`` before the agents start.  The controller runs in the
namespace of the first host and listens on every address; hosts of other sites reach
it at that host's tunnel address.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import ipaddress
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

if __package__:  # tests.integration.testbed (the benchmarks)
    from .tcpproxy import TcpProxy
else:  # testbed, beside the integration tests
    from tcpproxy import TcpProxy

BIN_DIR = Path(sys.executable).parent
PREFIX = "dlt"
ID_LEN = 4
REGISTRY = Path("/run/dlt-testbed")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
BRIDGE = "br-dl"
GATEWAY_MAC = "02:da:00:00:00:01"
ROUTE_PROTO = 211
HOST_OFFSET = 10  # host N has underlay address 198.18.X.(10+N)

# Cookie kinds (top byte), see docs/architecture.md.
COOKIE_CONNECTION = 0xD1
COOKIE_BASE = 0xD0
COOKIE_DENY = 0xDD

# Flow priorities of table 1.
PRIO_CONNECTION = 100
PRIO_MISS = 0

OVS_TOOLS = ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
NET_TOOLS = ("ip", "ethtool", "ping", "nc", "ss", "traceroute", "tcpdump", "iperf3")
DAOLINET_BINARIES = ("daolinet-controller", "daolinet-hostnet")
DAOLINET_MODULES = ("controller.main", "hostnet.main")

T = TypeVar("T")


class TestbedError(RuntimeError):
    """The testbed could not be built or a helper failed; the message says why."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------- requirements


def missing_requirements(*, daolinet: bool = True) -> list[str]:
    """What this machine lacks to run a testbed; empty when everything is there."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append(f"root (running as euid {os.geteuid()}; needs euid 0)")
    for tool in (*OVS_TOOLS, *NET_TOOLS):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` not on PATH")
    if not OVS_SCHEMA.exists():
        missing.append(f"OVS schema {OVS_SCHEMA}")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun (OVS netdev bridges need TUN)")
    if daolinet:
        for binary in DAOLINET_BINARIES:
            if not (BIN_DIR / binary).exists():
                missing.append(f"{BIN_DIR / binary}")
        for module in DAOLINET_MODULES:
            try:
                spec = importlib.util.find_spec(module)
            except ImportError:
                spec = None
            if spec is None:
                missing.append(f"module `{module}` (entry point not written yet)")
    return missing


def skip_reason(*, daolinet: bool = True) -> str | None:
    missing = missing_requirements(daolinet=daolinet)
    if not missing:
        return None
    return "integration testbed needs: " + "; ".join(missing)


# --------------------------------------------------------------------------- small helpers


def _run(
    cmd: Sequence[str],
    *,
    timeout: float = 10.0,
    check: bool = False,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        if check:
            raise TestbedError(f"timed out after {timeout}s: {' '.join(cmd)}\n{out}{err}") from exc
        return subprocess.CompletedProcess(list(cmd), 124, out, err)
    if check and proc.returncode != 0:
        raise TestbedError(
            f"command failed (rc={proc.returncode}): {' '.join(cmd)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def tail(path: Path | str, lines: int = 40) -> str:
    """The last `lines` lines of a log file (or a note that it is missing)."""
    p = Path(path)
    try:
        data = p.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"<{p} does not exist>"
    return "\n".join(data[-lines:]) if data else f"<{p} is empty>"


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet". On timeout raise
    AssertionError with `message`, the last value or exception and `detail()`.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # the predicate may fail until things are up
            last = exc
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                try:
                    extra = "\n" + detail()
                except Exception as exc:
                    extra = f"\n<detail failed: {exc!r}>"
            raise AssertionError(f"{message} (after {timeout:.1f}s; last: {last!r}){extra}")
        time.sleep(interval)


def _proc_starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces/parens: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat (starttime)


def _alive(pid: int, starttime: int | None) -> bool:
    now = _proc_starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def _kill_group(pid: int, starttime: int | None, timeout: float = 5.0) -> None:
    """SIGTERM the process group led by `pid` (if it is still that process), then SIGKILL."""
    if not _alive(pid, starttime):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid, starttime):
                return
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns]).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def _kill_netns(ns: str) -> None:
    """Kill every process inside `ns`, then delete it."""
    for _ in range(3):
        pids = [p for p in _netns_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            _kill_group(pid, _proc_starttime(pid), timeout=3.0)
    _run(["ip", "netns", "delete", ns])


def _root_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _owner_id(name: str) -> str | None:
    if not name.startswith(PREFIX) or len(name) < len(PREFIX) + ID_LEN:
        return None
    ident = name[len(PREFIX) : len(PREFIX) + ID_LEN]
    return ident if re.fullmatch(r"[0-9a-f]+", ident) else None


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_ids() -> set[str]:
    live = set()
    for reg in REGISTRY.glob("*.json"):
        try:
            data = json.loads(reg.read_text())
        except (OSError, ValueError):
            continue
        if _alive(data.get("owner", -1), data.get("owner_start")):
            live.add(data["id"])
    return live


def cleanup_leftovers() -> list[str]:
    """Remove what crashed earlier testbeds left: netns ``dlt*``, links ``dlt*``,
    their processes and temp dirs. Testbeds whose owning process is alive are kept.
    Returns what was removed (for logging)."""
    removed: list[str] = []
    with _registry_lock():
        live = _live_ids()
        # registry entries of dead owners: their processes and directories
        for reg in REGISTRY.glob("*.json"):
            try:
                data = json.loads(reg.read_text())
            except (OSError, ValueError):
                reg.unlink(missing_ok=True)
                continue
            if data.get("id") in live:
                continue
            for proc in data.get("procs", []):
                if _alive(proc["pid"], proc.get("start")):
                    _kill_group(proc["pid"], proc.get("start"))
                    removed.append(f"process {proc['pid']} ({proc.get('what', '?')})")
            for ns in data.get("netns", []):
                if ns in _netns_list():
                    _kill_netns(ns)
                    removed.append(f"netns {ns}")
            for link in data.get("links", []):
                if link in _root_links():
                    _run(["ip", "link", "delete", link])
                    removed.append(f"link {link}")
            workdir = data.get("dir")
            if workdir and Path(workdir).exists() and not data.get("keep"):
                shutil.rmtree(workdir, ignore_errors=True)
                removed.append(f"dir {workdir}")
            reg.unlink(missing_ok=True)
        # anything named dlt* without a live owner (registry lost, older runs)
        for ns in _netns_list():
            ident = _owner_id(ns)
            if ident is not None and ident not in live:
                _kill_netns(ns)
                removed.append(f"netns {ns}")
        for link in _root_links():
            ident = _owner_id(link)
            if ident is not None and ident not in live:
                _run(["ip", "link", "delete", link])
                removed.append(f"link {link}")
        removed += _remove_wg_sockets(None, keep=live)
    return removed


WG_UAPI_DIR = Path("/var/run/wireguard")


def _link_no_ipv6(link: str) -> None:
    """No IPv6 on a root-namespace link of a site underlay (IPv4 only on the wire)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")


def _remove_wg_sockets(ids: set[str] | None, keep: Iterable[str] = ()) -> list[str]:
    """Remove wireguard-go control sockets of testbeds (`ids`, or every dead one):
    a killed wireguard-go leaves its socket behind, and the next one of the name
    would refuse to start."""
    removed = []
    for sock in WG_UAPI_DIR.glob(f"{PREFIX}*.sock"):
        ident = _owner_id(sock.stem)
        if ident is None or ident in set(keep) or (ids is not None and ident not in ids):
            continue
        if Path(f"/sys/class/net/{sock.stem}").exists():
            continue  # the interface lives in the root namespace: not ours
        sock.unlink(missing_ok=True)
        removed.append(f"socket {sock}")
    return removed


# --------------------------------------------------------------------------- data objects


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
        for part in head.replace(", ", ",").replace(" ", ",").split(","):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if key == "cookie":
                flow.cookie = int(value, 0)
            elif key == "table":
                flow.table = int(value)
            elif key == "priority":
                flow.priority = int(value)
            elif key == "idle_timeout":
                flow.idle_timeout = int(value)
            elif key == "hard_timeout":
                flow.hard_timeout = int(value)
            elif key == "n_packets":
                flow.n_packets = int(value)
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


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    what: str
    log: Path | None
    start: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


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


# --------------------------------------------------------------------------- the testbed


class Pinger:
    """`ping -i 0.05` in the background; counts what was sent and answered."""

    def __init__(self, tb: Testbed, src: Container, dst: Container, seconds: float) -> None:
        count = int(seconds / 0.05)
        self.out = tb.dir / f"ping-{src.name}-{dst.name}-{time.monotonic_ns()}.log"
        self.proc = tb.spawn(src, "ping", "-n", "-i", "0.05", "-W", "1", "-c", str(count),
                             dst.ip, what="ping", log=self.out)

    def result(self) -> tuple[int, int]:
        """(sent, received), once ping ended."""
        self.proc.popen.wait(timeout=120)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", self.out.read_text())
        assert m, tail(self.out)
        return int(m.group(1)), int(m.group(2))


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
    ) -> None:
        # `store`: one URL for every replica, or one per replica (e.g. a replica that
        # reaches etcd through a proxy a test can cut)
        # `replica_site`, `replica_remote_ip`: every replica runs with --site SITE
        # --advertise-openflow-remote tcp:IP:ITS_PORT (the target of other sites'
        # switches; nothing needs to listen there)
        stores = [store] * replicas if store is None or isinstance(store, str) else list(store)
        if len(stores) != replicas:
            raise ValueError(f"{len(stores)} store URLs for {replicas} replicas")
        if replicas > 1 and not all((u or "").startswith("etcd:") for u in stores):
            raise ValueError("controller replicas need an etcd store URL (store=...)")
        names = [f"h{i}" for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        if not names:
            raise ValueError("a testbed needs at least one host")
        self.host_names = names
        self.idle_timeout = idle_timeout
        self.daolinet = daolinet
        self.sites = dict(sites or {})
        self.controller_args = list(controller_args)
        self.agent_args = list(agent_args)
        self.container_tx_off = container_tx_off
        self.docker_hosts = set(docker_hosts)
        self.wireguard = wireguard
        self.nat_sites = set(nat_sites)
        self.relays = set(relays)
        self.ready_timeout = ready_timeout
        self.replicas = replicas
        self.store_urls = stores
        self.replica_site = replica_site
        self.replica_remote_ip = replica_remote_ip
        self.keep_dir = (
            bool(os.environ.get("DLT_KEEP")) if keep_dir is None else keep_dir
        )

        self.id = ""
        self.octet = 0
        self.dir = Path()
        self.hosts: dict[str, Host] = {}
        self.containers: dict[str, Container] = {}
        self.controller: Proc | None = None
        self.token = ""
        self.api_port = 0
        self.of_port = 0
        # controller replicas (index 0 is `controller`, `api_port`, `of_port`)
        self.replica_procs: list[Proc | None] = []
        self.api_ports: list[int] = []
        self.of_ports: list[int] = []
        self._procs: list[Proc] = []
        self._all_procs: list[Proc] = []  # every process ever started (for resources())
        self._netns: list[str] = []
        self._links: list[str] = []
        self._http: httpx.Client | None = None
        self._started = False
        self._closed = False
        self._forward_added = False
        self.site_octets: dict[str, int] = {}
        self.transit_octet = 0
        self._fw_rules: list[list[str]] = []
        self._store_bridges: list[TcpProxy] = []  # see _bridge_store

    # ------------------------------------------------------------------ names/addresses

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.id}ul"

    @property
    def _forward_rule(self) -> list[str]:
        return ["-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    @property
    def controller_ip(self) -> str:
        if self.wireguard:  # the controller runs in the first host's namespace
            return f"198.18.{self.octet}.{HOST_OFFSET + 1}"
        return f"198.18.{self.octet}.1"

    @property
    def root_ip(self) -> str:
        """The root namespace's address on the (first site's) underlay bridge."""
        return f"198.18.{self.octet}.1"

    @property
    def underlay(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.18.{self.octet}.0/24")

    @property
    def api_url(self) -> str:
        return f"http://{self.controller_ip}:{self.api_port}"

    @property
    def registry_file(self) -> Path:
        return REGISTRY / f"{self.id}.json"

    @property
    def controller_log(self) -> Path:
        return self.dir / "controller.log"

    def host(self, host: Host | str) -> Host:
        if isinstance(host, Host):
            return host
        try:
            return self.hosts[host]
        except KeyError:
            raise TestbedError(f"no host {host!r}; hosts are {list(self.hosts)}") from None

    def ns_of(self, target: Target | None) -> str | None:
        if target is None:
            return None
        if isinstance(target, Host | Container):
            return target.ns
        if target in self.hosts:
            return self.hosts[target].ns
        if target in self.containers:
            return self.containers[target].ns
        return target

    def ip_of(self, target: Target) -> str:
        """The address of a Container/Host (or of one named so), else `target` itself."""
        if isinstance(target, Container):
            return target.ip
        if isinstance(target, Host):
            return target.address
        if target in self.containers:
            return self.containers[target].ip
        if target in self.hosts:
            return self.hosts[target].address
        return target

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
        _exit_on_sigterm()
        try:
            self._allocate()
            self._build_underlay()
            if self.wireguard:
                _link_no_ipv6(self.bridge)
                self._build_sites()
            for index, name in enumerate(self.host_names, start=1):
                self._build_host(index, name)
            if self.wireguard:
                self._provision_mesh()
            if self.daolinet:
                self._start_controller()
                for host in self.hosts.values():
                    self._start_agent(host)
                for host in self.hosts.values():
                    self._wait_agent_ready(host)
        except BaseException:
            self.close()
            raise
        return self

    def _allocate(self) -> None:
        with _registry_lock():
            live = _live_ids()
            used_octets = set()
            text = _run(["ip", "-4", "-o", "addr", "show"]).stdout
            text += _run(["ip", "-4", "route", "show", "table", "all"]).stdout
            for m in re.finditer(r"198\.18\.(\d+)\.", text):
                used_octets.add(int(m.group(1)))
            existing = {_owner_id(n) for n in [*_netns_list(), *_root_links()]}
            while True:
                ident = secrets.token_hex(ID_LEN // 2 + 1)[:ID_LEN]
                if ident not in live and ident not in existing:
                    break
            free = [o for o in range(1, 255) if o not in used_octets]
            if not free:
                raise TestbedError("no free 198.18.X.0/24 underlay subnet")
            self.id = ident
            self.octet = random.choice(free)
            self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{ident}-"))
            self._save_registry()

    def _save_registry(self) -> None:
        if not self.id:
            return
        REGISTRY.mkdir(parents=True, exist_ok=True)
        data = {
            "id": self.id,
            "owner": os.getpid(),
            "owner_start": _proc_starttime(os.getpid()),
            "dir": str(self.dir),
            "keep": self.keep_dir,
            "netns": self._netns,
            "links": self._links,
            "procs": [
                {"pid": p.pid, "start": p.start, "what": p.what} for p in self._procs if p.alive()
            ],
        }
        tmp = self.registry_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.registry_file)

    def _add_netns(self, ns: str) -> None:
        self._netns.append(ns)
        self._save_registry()
        _run(["ip", "netns", "add", ns], check=True)
        self.exec(ns, "ip", "link", "set", "lo", "up", check=True)

    def _build_underlay(self) -> None:
        br = self.bridge
        self._links.append(br)
        self._save_registry()
        _run(["ip", "link", "add", br, "type", "bridge", "stp_state", "0"], check=True)
        _run(["ip", "addr", "add", f"{self.root_ip}/24", "dev", br], check=True)
        _run(["ip", "link", "set", br, "up"], check=True)
        # A Docker engine in the root namespace sets FORWARD to DROP and makes bridged
        # traffic meet iptables (br_netfilter): let our own underlay through.
        if shutil.which("iptables") is not None and _run(
            ["iptables", "-I", "FORWARD", *self._forward_rule]
        ).returncode == 0:
            self._forward_added = True

    def _build_host(self, index: int, name: str) -> None:
        ns = f"{PREFIX}{self.id}h{index}"
        veth = f"{ns}u"
        hdir = self.dir / name
        hdir.mkdir()
        host = Host(
            name=name,
            index=index,
            ns=ns,
            address=self._host_address(index, name),
            dir=hdir,
            veth=veth,
            site=self.sites.get(name),
        )
        if self.wireguard:
            host.site = self._site_of(name)
            host.tunnel = f"198.19.{self.octet}.{HOST_OFFSET + index}"
            host.wg_if = f"{PREFIX}{self.id}w{index}"
        self.hosts[name] = host
        self._add_netns(ns)
        if self.wireguard:
            self._no_ipv6(ns)
        self._links.append(veth)
        self._save_registry()
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
             check=True)
        if self.wireguard:
            _link_no_ipv6(veth)
        _run(["ip", "link", "set", veth, "master", self._host_bridge(host), "up"], check=True)
        self.exec(ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0", check=True)
        self.exec(ns, "ip", "link", "set", "eth0", "up", check=True)
        if self.wireguard:
            gw = ".".join([*host.address.split(".")[:3], "254"])
            self.exec(ns, "ip", "route", "add", "default", "via", gw, check=True)
        self._start_ovs(host)

    def _ovs_env(self, host: Host) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"):
            env[var] = str(host.dir)
        return env

    # Open_vSwitch other_config keys written before ovs-vswitchd starts (some, such as
    # `userspace-tso-enable`, are read only at start-up). Set it on the instance before
    # start(), e.g. `tb.ovs_other_config = {"userspace-tso-enable": "true"}`.
    ovs_other_config: dict[str, str] | None = None

    def _start_ovs(self, host: Host) -> None:
        d = host.dir
        db = d / "conf.db"
        _run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)], check=True)
        env = self._ovs_env(host)
        host.ovsdb = self.spawn(
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
        self._wait_proc(
            host.ovsdb,
            lambda: self.vsctl(host, "--timeout=2", "--no-wait", "init").returncode == 0,
            f"ovsdb-server of {host.name} did not answer on {host.db_sock}",
            host.ovsdb_log,
            timeout=15,
        )
        if self.ovs_other_config:
            res = self.vsctl(host, "--timeout=5", "--no-wait", "set", "Open_vSwitch", ".",
                             *(f"other_config:{k}={v}"
                               for k, v in sorted(self.ovs_other_config.items())))
            if res.returncode != 0:
                raise TestbedError(f"other_config on {host.name}: {res.stderr.strip()}")
        host.vswitchd = self.spawn(
            host.ns,
            "ovs-vswitchd", f"unix:{host.db_sock}",
            f"--unixctl={d / 'ovs-vswitchd.ctl'}",
            f"--pidfile={d / 'ovs-vswitchd.pid'}",
            f"--log-file={host.vswitchd_log}",
            what=f"ovs-vswitchd {host.name}",
            env=env,
            log=d / "ovs-vswitchd.out",
        )
        self._wait_proc(
            host.vswitchd,
            lambda: _run(
                ["ovs-appctl", "-t", str(d / "ovs-vswitchd.ctl"), "version"], timeout=3
            ).returncode == 0
            and self.vsctl(host, "--timeout=3", "init").returncode == 0,
            f"ovs-vswitchd of {host.name} did not come up",
            host.vswitchd_log,
            timeout=15,
        )

    # ------------------------------------------------------------------ controller/agents

    def _free_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # (with sites the controller has a fresh namespace: any port free here is)
            s.bind((self.root_ip if self.wireguard else self.controller_ip, 0))
            return int(s.getsockname()[1])

    def _controller_cmd(self, i: int = 0) -> list[str]:
        cmd = [
            str(BIN_DIR / "daolinet-controller"),
            "--store", self.store_urls[i] or f"sqlite:///{self.dir / 'store.db'}",
            "--token-file", str(self.dir / "token"),
            "--api", f"{self._listen_ip}:{self.api_ports[i]}",
            "--openflow", f"{self._listen_ip}:{self.of_ports[i]}",
            "--idle-timeout", _num(self.idle_timeout),
        ]
        if self.store_urls[i]:
            cmd += [
                "--replica", f"c{i}",
                "--advertise", self.replica_url(i),
                "--advertise-openflow", self.openflow_target(i),
            ]
        if self.replica_site is not None:
            cmd += ["--site", self.replica_site]
        if self.replica_remote_ip is not None:
            cmd += ["--advertise-openflow-remote", self.openflow_target(i, remote=True)]
        return [*cmd, *self.controller_args]

    def openflow_target(self, i: int, *, remote: bool = False) -> str:
        """Replica `i`'s OpenFlow target, for the switches of its site or (`remote`) of
        the other sites."""
        ip = self.replica_remote_ip if remote and self.replica_remote_ip else self.controller_ip
        return f"tcp:{ip}:{self.of_ports[i]}"

    def replica_url(self, i: int) -> str:
        return f"http://{self.controller_ip}:{self.api_ports[i]}"

    def replica_log(self, i: int) -> Path:
        return self.controller_log if i == 0 else self.dir / f"controller-{i}.log"

    def _bridge_store(self) -> None:
        """With WireGuard the replicas run in the first host's namespace, where the
        test's etcd cluster (on this namespace's loopback) is out of reach: bridge each
        of its 127.0.0.1 endpoints into that namespace at the same address, so the
        store URLs stay as given."""
        ns = self._controller_ns
        if ns is None:
            return
        ports = sorted({int(m) for u in self.store_urls if (u or "").startswith("etcd:")
                        for m in re.findall(r"127\.0\.0\.1:(\d+)", u or "")})
        for port in ports:
            self._store_bridges.append(TcpProxy(("127.0.0.1", port), netns=ns))

    def _start_controller(self) -> None:
        if self.wireguard and self.replicas > 1:
            # Replicas of the first host's site; switches of other sites reach them
            # through WireGuard, at the first host's tunnel address.
            first = self.hosts[self.host_names[0]]
            self.replica_site = self.replica_site or first.site
            self.replica_remote_ip = self.replica_remote_ip or first.tunnel
        self._bridge_store()
        self.token = secrets.token_urlsafe(24)
        token_file = self.dir / "token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        taken: set[int] = set()
        for _ in range(self.replicas):
            for ports in (self.api_ports, self.of_ports):
                port = self._free_port()
                while port in taken:
                    port = self._free_port()
                taken.add(port)
                ports.append(port)
        self.api_port, self.of_port = self.api_ports[0], self.of_ports[0]
        self.replica_procs = [None] * self.replicas
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )
        for i in range(self.replicas):
            self._launch_controller(i)

    def _launch_controller(self, i: int = 0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        what = "daolinet-controller"
        proc = self.spawn(
            self._controller_ns, *self._controller_cmd(i), what=what,
            log=self.replica_log(i), env=env,
        )
        self.replica_procs[i] = proc
        if i == 0:
            self.controller = proc

        def ready() -> bool:
            r = httpx.get(f"{self.replica_url(i)}/healthz", timeout=2.0)
            if r.status_code != 200:
                return False
            with socket.create_connection((self.controller_ip, self.of_ports[i]), timeout=2.0):
                return True

        self._wait_proc(
            proc, ready,
            f"controller {i} did not serve {self.replica_url(i)}/healthz and OpenFlow port "
            f"{self.of_ports[i]}",
            self.replica_log(i), timeout=self.ready_timeout,
        )

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Stop controller replica `i` (SIGKILL: a crash)."""
        proc = self.replica_procs[i]
        if proc is not None:
            self.stop(proc, sig=sig)
        self.replica_procs[i] = None

    def start_replica(self, i: int) -> None:
        """Start controller replica `i` again (same store, token, ports)."""
        with open(self.replica_log(i), "a") as fh:
            fh.write(f"\n===== testbed: replica {i} start at {time.time():.3f} =====\n")
        self._launch_controller(i)

    def controller_roles(self, host: Host | str) -> dict[str, str]:
        """OVS's view of the bridge's controllers: target -> role (master/slave/other),
        of the connected ones."""
        out = self.vsctl(host, "--timeout=3", "-f", "json", "--columns=target,role,is_connected",
                         "list", "Controller").stdout
        roles: dict[str, str] = {}
        for target, role, connected in json.loads(out or '{"data": []}')["data"]:
            if connected is True:
                roles[str(target)] = role if isinstance(role, str) else "other"
        return roles

    def switches_mastered(self, i: int) -> int:
        """How many switches confirmed (role reply) that replica `i` is their master, as
        its /metrics says (0 when it does not answer).  OVS writes a controller's role
        to its database only every few seconds: this is the prompt view."""
        return self.replica_gauge(i, "daolinet_switches_mastered")

    def replica_gauge(self, i: int, name: str) -> int:
        """A gauge of replica `i`'s /metrics (0 when it does not answer)."""
        try:
            text = httpx.get(f"{self.replica_url(i)}/metrics", timeout=1.0).text
        except httpx.HTTPError:
            return 0
        m = re.search(rf"^{name} (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def master_of(self, host: Host | str) -> list[int]:
        """The replicas (indexes) that are OpenFlow master of the host's bridge, as
        OVS's database says (it writes roles only every few seconds)."""
        roles = self.controller_roles(host)
        return [i for i, port in enumerate(self.of_ports)
                if roles.get(f"tcp:{self.controller_ip}:{port}") == "master"]

    def confirmed_masters(self, without: int | None = None) -> dict[str, int] | None:
        """host -> the one replica whose role reply made it master of the host's
        switch, as the replicas' /metrics say (prompt); None unless every host has
        exactly one, and it is not `without`."""
        live = [i for i in range(self.replicas)
                if i != without and self.replica_procs[i] is not None]
        try:
            hosts = httpx.get(f"{self.replica_url(live[0])}/api/v1/hosts", timeout=2.0,
                              headers={"Authorization": f"Bearer {self.token}"}).json()
        except (httpx.HTTPError, IndexError, ValueError):
            return None
        dpids = {h["dpid"]: h["name"] for h in hosts if h["name"] in self.hosts}
        found: dict[str, list[int]] = {}
        for i in live:
            try:
                text = httpx.get(f"{self.replica_url(i)}/metrics", timeout=1.0).text
            except httpx.HTTPError:
                continue
            for dpid in re.findall(r'^daolinet_switch_mastered\{dpid="(\d+)"\} 1$', text,
                                   re.M):
                if int(dpid) in dpids:
                    found.setdefault(dpids[int(dpid)], []).append(i)
        if sorted(found) != sorted(self.hosts) or any(len(v) != 1 for v in found.values()):
            return None
        return {h: v[0] for h, v in found.items()}

    def wait_masters(self, timeout: float = 10.0, *, without: int | None = None,
                     interval: float = 0.05) -> dict[str, int]:
        """Wait until every switch has exactly one confirmed master (not `without`)."""
        holder: list[dict[str, int]] = []

        def found() -> bool:
            m = self.confirmed_masters(without)
            if m is not None:
                holder.append(m)
            return m is not None

        self.wait_until(found, timeout, "not every switch has exactly one confirmed master",
                        interval=interval, detail=self.roles_dump)
        return holder[-1]

    def kill_master(self, host: str, timeout: float = 10.0
                    ) -> tuple[int, dict[str, int], dict[str, int], float]:
        """SIGKILL the replica that masters `host`'s switch; wait until every switch
        has a confirmed master again.  (victim, masters before, masters after, seconds
        from the kill to then)."""
        before = self.wait_masters()
        victim = before[host]
        killed = time.monotonic()
        self.kill_replica(victim, signal.SIGKILL)
        after = self.wait_masters(timeout, without=victim, interval=0.01)
        return victim, before, after, time.monotonic() - killed

    def roles_dump(self) -> str:
        return "\n".join(f"{h}: {self.controller_roles(h)}" for h in self.hosts)

    def _agent_cmd(self, host: Host) -> list[str]:
        cmd = [
            str(BIN_DIR / "daolinet-hostnet"), "agent",
            "--controller", self._agent_controller_url(host),
            "--token-file", str(self.dir / "token"),
            "--host", host.name,
            "--ovsdb", f"unix:{host.db_sock}",
            "--bridge", BRIDGE,
            "--address", host.address,
            "--socket", str(host.socket),
            "--datapath-type", "netdev",
        ]
        if host.site is not None:
            cmd += ["--site", host.site]
        if host.name in self.docker_hosts:
            # Docker looks for plugins in /run/docker/plugins, which the host's dockerd
            # sees as this host's own directory (see dockerbed.py).
            host.plugin_socket.parent.mkdir(exist_ok=True)
            cmd += ["--plugin-socket", str(host.plugin_socket),
                    "--docker-host", f"unix://{host.docker_sock}"]
        else:
            cmd += ["--plugin-socket", ""]  # never the machine-wide default
        if self.wireguard:
            cmd += ["--wireguard", str(self._wg_config_path(host))]
        return [*cmd, *self.agent_args]

    def _start_agent(self, host: Host) -> None:
        env = self._ovs_env(host)
        env["PYTHONUNBUFFERED"] = "1"
        host.agent = self.spawn(
            host.ns, *self._agent_cmd(host), what=f"agent {host.name}",
            log=host.agent_log, env=env,
        )

    def agent_answers(self, host: Host | str) -> bool:
        """True when something answers HTTP on the agent's unix socket."""
        h = self.host(host)
        transport = httpx.HTTPTransport(uds=str(h.socket))
        with httpx.Client(transport=transport, timeout=2.0) as client:
            client.get("http://agent/")
        return True

    def controller_connected(self, host: Host | str) -> bool:
        h = self.host(host)
        out = self.vsctl(h, "--timeout=3", "--bare", "--columns=is_connected", "list",
                         "Controller").stdout
        return "true" in out.split()

    def registered(self, host: Host | str) -> bool:
        name = self.host(host).name
        r = self.api("GET", "/hosts")
        return r.status_code == 200 and any(
            item.get("name") == name for item in _items(r.json())
        )

    def base_flows_installed(self, host: Host | str) -> bool:
        return any(f.table == 1 and f.priority == PRIO_MISS for f in self.parsed_flows(host, 1))

    def _wait_agent_ready(self, host: Host) -> None:
        assert host.agent is not None
        steps: list[tuple[str, Callable[[], bool]]] = [
            (f"agent of {host.name} does not answer on {host.socket}",
             lambda: self.agent_answers(host)),
            (f"agent of {host.name} did not create {BRIDGE}",
             lambda: self.vsctl(host, "--timeout=3", "br-exists", BRIDGE).returncode == 0
             and host.mgmt.exists()),
            (f"{BRIDGE} of {host.name} is not connected to the controller",
             lambda: self.controller_connected(host)),
            (f"host {host.name} is not registered (GET /api/v1/hosts)",
             lambda: self.registered(host)),
            (f"base flows (table 1 priority 0) missing on {host.name}",
             lambda: self.base_flows_installed(host)),
        ]
        deadline = time.monotonic() + self.ready_timeout
        for message, predicate in steps:
            self._wait_proc(host.agent, predicate, message, host.agent_log,
                            timeout=max(1.0, deadline - time.monotonic()),
                            more_logs=[host.vswitchd_log, self.controller_log])

    def _wait_proc(
        self,
        proc: Proc,
        predicate: Callable[[], bool],
        message: str,
        log: Path,
        timeout: float,
        more_logs: Iterable[Path] = (),
    ) -> None:
        """wait_until(predicate), failing at once (with the log) if `proc` exits."""

        def check() -> bool:
            if not proc.alive():
                raise TestbedError(
                    f"{proc.what} exited with rc={proc.popen.returncode} while waiting: "
                    f"{message}\n--- {log} ---\n{tail(log)}"
                    + "".join(f"\n--- {p} ---\n{tail(p, 15)}" for p in more_logs)
                    + (f"\n--- output ---\n{tail(proc.log)}" if proc.log and proc.log != log
                       else "")
                )
            return predicate()

        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                if check():
                    return
            except TestbedError:
                raise
            except Exception as exc:
                last = exc
            if time.monotonic() >= deadline:
                logs = f"\n--- {log} ---\n{tail(log)}"
                logs += "".join(f"\n--- {p} ---\n{tail(p, 15)}" for p in more_logs)
                if proc.log and proc.log != log:
                    logs += f"\n--- {proc.log} ---\n{tail(proc.log, 15)}"
                raise TestbedError(f"{message} after {timeout:.1f}s (last: {last!r}){logs}")
            time.sleep(0.1)

    def restart_controller(self, *, sig: int = signal.SIGTERM, wait: bool = True) -> None:
        """Stop the controller (SIGTERM, or e.g. SIGKILL for a crash) and start it again
        with the same store, token and ports. With `wait`, return once it serves the API
        and every bridge is connected to it again."""
        if self.controller is not None:
            self.stop(self.controller, sig=sig)
        with open(self.controller_log, "a") as fh:
            fh.write(f"\n===== testbed: controller restart at {time.time():.3f} =====\n")
        self._launch_controller()
        if wait:
            for host in self.hosts.values():
                self._wait_proc(
                    self.controller, lambda h=host: self.controller_connected(h),
                    f"{BRIDGE} of {host.name} did not reconnect to the restarted controller",
                    self.controller_log, timeout=self.ready_timeout,
                    more_logs=[host.vswitchd_log],
                )
            for host in self.hosts.values():
                self._wait_proc(
                    self.controller, lambda h=host: self.base_flows_installed(h),
                    f"base flows missing on {host.name} after controller restart",
                    self.controller_log, timeout=self.ready_timeout,
                )

    def restart_agent(self, host: Host | str, *, sig: int = signal.SIGTERM,
                      wait: bool = True) -> None:
        """Stop the agent of `host` and start it again; with `wait`, until it is ready."""
        h = self.host(host)
        if h.agent is not None:
            self.stop(h.agent, sig=sig)
        with open(h.agent_log, "a") as fh:
            fh.write(f"\n===== testbed: agent restart at {time.time():.3f} =====\n")
        self._start_agent(h)
        if wait:
            self._wait_agent_ready(h)

    # ------------------------------------------------------------------ sites + WireGuard

    @property
    def site_names(self) -> list[str]:
        """Sites in the order of their first host (the first is the controller's)."""
        out: list[str] = []
        for name in self.host_names:
            site = self._site_of(name)
            if site not in out:
                out.append(site)
        for site in self.sites.values():
            if site not in out:
                out.append(site)
        return out

    def _site_of(self, name: str) -> str:
        return self.sites.get(name) or self.sites.get(self.host_names[0]) or "default"

    def _site_octet(self, site: str) -> int:
        return self.site_octets.get(site, self.octet)

    def site_bridge(self, site: str) -> str:
        i = self.site_names.index(site)
        return self.bridge if i == 0 else f"{PREFIX}{self.id}u{i}"

    def _host_bridge(self, host: Host) -> str:
        return self.site_bridge(host.site) if self.wireguard and host.site else self.bridge

    def _host_address(self, index: int, name: str) -> str:
        octet = self._site_octet(self._site_of(name)) if self.wireguard else self.octet
        return f"198.18.{octet}.{HOST_OFFSET + index}"

    @property
    def router_ns(self) -> str:
        return f"{PREFIX}{self.id}r"

    def nat_ns(self, site: str) -> str:
        return f"{PREFIX}{self.id}n{self.site_names.index(site)}"

    @property
    def _listen_ip(self) -> str:
        return "0.0.0.0" if self.wireguard else self.controller_ip

    @property
    def _controller_ns(self) -> str | None:
        return self.hosts[self.host_names[0]].ns if self.wireguard else None

    def _agent_controller_url(self, host: Host) -> str:
        first = self.hosts[self.host_names[0]]
        if self.wireguard and host.site != first.site:  # through WireGuard
            return ",".join(f"http://{first.tunnel}:{p}" for p in self.api_ports)
        return ",".join(self.replica_url(i) for i in range(self.replicas))

    def _wg_config_path(self, host: Host) -> Path:
        return host.dir / "wireguard.json"

    def _allocate_site_octets(self) -> None:
        used = set()
        text = _run(["ip", "-4", "-o", "addr", "show"]).stdout
        text += _run(["ip", "-4", "route", "show", "table", "all"]).stdout
        for m in re.finditer(r"198\.18\.(\d+)\.", text):
            used.add(int(m.group(1)))
        used.add(self.octet)
        free = [o for o in range(1, 255) if o not in used]
        random.shuffle(free)
        sites = self.site_names
        if len(free) < len(sites):
            raise TestbedError("no free 198.18.X.0/24 subnets for the sites")
        self.site_octets = {sites[0]: self.octet}
        for site in sites[1:]:
            self.site_octets[site] = free.pop()
        self.transit_octet = free.pop()

    def _accept_forward(self, bridge: str) -> None:
        rule = ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        if shutil.which("iptables") is not None and _run(
            ["iptables", "-I", "FORWARD", *rule]
        ).returncode == 0:
            self._fw_rules.append(rule)

    def _build_sites(self) -> None:
        """Site bridges, the core router (ICMP dropped) and NAT routers."""
        with _registry_lock():
            self._allocate_site_octets()
        r = self.router_ns
        self._add_netns(r)
        self._no_ipv6(r)
        self.exec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        no_icmp = ("table inet dlt { chain noicmp { type filter hook forward priority 0; "
                   "policy accept; meta l4proto icmp drop; }; }")
        self.exec(r, "nft", "-f", "-", input=no_icmp, check=True)
        for i, site in enumerate(self.site_names):
            octet = self.site_octets[site]
            br = self.site_bridge(site)
            if i > 0:
                self._links.append(br)
                self._save_registry()
                _run(["ip", "link", "add", br, "type", "bridge", "stp_state", "0"], check=True)
                _link_no_ipv6(br)
                _run(["ip", "link", "set", br, "up"], check=True)
                self._accept_forward(br)
            if site not in self.nat_sites:
                leg = f"{PREFIX}{self.id}r{i}"
                self._links.append(leg)
                self._save_registry()
                _run(["ip", "link", "add", leg, "type", "veth", "peer", "name", f"s{i}",
                      "netns", r], check=True)
                _link_no_ipv6(leg)
                _run(["ip", "link", "set", leg, "master", br, "up"], check=True)
                self.exec(r, "ip", "addr", "add", f"198.18.{octet}.254/24", "dev", f"s{i}",
                          check=True)
                self.exec(r, "ip", "link", "set", f"s{i}", "up", check=True)
                continue
            # behind NAT: inside leg on the site bridge, outside /30 to the core router
            n = self.nat_ns(site)
            self._add_netns(n)
            self._no_ipv6(n)
            leg = f"{n}u"
            self._links.append(leg)
            self._save_registry()
            _run(["ip", "link", "add", leg, "type", "veth", "peer", "name", "in", "netns", n],
                 check=True)
            _link_no_ipv6(leg)
            _run(["ip", "link", "set", leg, "master", br, "up"], check=True)
            t = self.transit_octet
            self.exec(n, "ip", "addr", "add", f"198.18.{octet}.254/24", "dev", "in", check=True)
            self.exec(n, "ip", "link", "set", "in", "up", check=True)
            self.exec(r, "ip", "link", "add", f"t{i}", "type", "veth", "peer", "name", "out",
                      "netns", n, check=True)
            self.exec(r, "ip", "addr", "add", f"198.18.{t}.{4 * i + 1}/30", "dev", f"t{i}",
                      check=True)
            self.exec(r, "ip", "link", "set", f"t{i}", "up", check=True)
            self.exec(n, "ip", "addr", "add", f"198.18.{t}.{4 * i + 2}/30", "dev", "out",
                      check=True)
            self.exec(n, "ip", "link", "set", "out", "up", check=True)
            self.exec(n, "ip", "route", "add", "default", "via", f"198.18.{t}.{4 * i + 1}",
                      check=True)
            self.exec(n, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
            nat = ("table ip dltnat { chain natout { type nat hook postrouting priority 100; "
                   'oifname "out" masquerade; }; }')
            self.exec(n, "nft", "-f", "-", input=nat, check=True)
            self.exec(n, "nft", "-f", "-", input=no_icmp, check=True)

    def _no_ipv6(self, ns: str) -> None:
        """The site underlays carry IPv4 only (no router solicitations in a capture)."""
        self.exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1", check=True)

    def nat_address(self, site: str) -> str:
        """The public (outside) address of a NAT site's router."""
        i = self.site_names.index(site)
        return f"198.18.{self.transit_octet}.{4 * i + 2}"

    def router_leg(self, site: str) -> tuple[str, str]:
        """(netns, interface) of the core router's link towards `site`."""
        i = self.site_names.index(site)
        return self.router_ns, (f"t{i}" if site in self.nat_sites else f"s{i}")

    def _wg_config(self, host: Host, mesh: bool) -> dict[str, Any]:
        assert host.tunnel is not None and host.wg_if is not None and host.site is not None
        cfg: dict[str, Any] = {
            "name": host.name,
            "site": host.site,
            "interface": host.wg_if,
            "private_key_file": str(host.dir / "wg.key"),
            "address": f"{host.tunnel}/24",
            "listen_port": 51820,
            "endpoint": None if host.site in self.nat_sites else f"{host.address}:51820",
            "relay": host.name in self.relays,
            "implementation": "userspace",
        }
        if mesh:
            cfg["hosts"] = [
                {
                    "name": h.name, "site": h.site, "wg_public_key": h.wg_public_key,
                    "wg_endpoint": None if h.site in self.nat_sites else f"{h.address}:51820",
                    "tunnel_address": h.tunnel, "relay": h.name in self.relays,
                }
                for h in self.hosts.values()
                if h.wg_public_key
            ]
        return cfg

    def wg_up(self, host: Host | str, mesh: bool = True) -> dict[str, Any]:
        """Run `daolinet-hostnet wg-up` on a host (what Ansible does in a deployment)."""
        h = self.host(host)
        path = self._wg_config_path(h)
        path.write_text(json.dumps(self._wg_config(h, mesh), indent=1))
        res = self.exec(h, str(BIN_DIR / "daolinet-hostnet"), "wg-up", "--config", str(path),
                        timeout=30)
        if res.returncode != 0:
            raise TestbedError(f"wg-up on {h.name} failed: {res.stdout}{res.stderr}")
        out = dict(json.loads(res.stdout))
        h.wg_public_key = str(out["public_key"])
        return out

    def _provision_mesh(self, hosts: Iterable[Host] | None = None) -> None:
        todo = list(hosts if hosts is not None else self.hosts.values())
        for h in todo:
            self.wg_up(h, mesh=False)  # interface + key; prints the public key
        for h in todo:
            self.wg_up(h, mesh=True)

    def add_host(self, name: str, site: str) -> Host:
        """A host joining later: its interface and key, a peer of the controller's host
        (the one peer it needs to register), then its agent.  Other hosts learn it from
        the controller, with no restart of anything."""
        index = len(self.host_names) + 1
        self.host_names.append(name)
        self.sites[name] = site
        self._build_host(index, name)
        h = self.hosts[name]
        if self.wireguard:
            self._provision_mesh([h])
            self.wg_up(self.host_names[0])  # the controller's host (Ansible: every host)
        self._start_agent(h)
        self._wait_agent_ready(h)
        return h

    def wg_dump(self, host: Host | str) -> list[dict[str, Any]]:
        """The peers of a host's WireGuard interface (`wg show IF dump`)."""
        h = self.host(host)
        assert h.wg_if is not None
        res = self.exec(h, "wg", "show", h.wg_if, "dump", check=True)
        peers = []
        for line in res.stdout.splitlines()[1:]:
            f = line.split("\t")
            peers.append({
                "public_key": f[0], "endpoint": f[2],
                "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
                "latest_handshake": int(f[4]), "keepalive": f[7],
            })
        return peers

    # ------------------------------------------------------------------ processes

    def spawn(
        self,
        ns: Target | None,
        *cmd: str,
        what: str | None = None,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        stdout: Path | None = None,
    ) -> Proc:
        """Start `cmd` (inside `ns` unless None) in its own process group; stdout and
        stderr go to `log` (default: a file in the testbed dir). Tracked for teardown."""
        netns = self.ns_of(ns)
        full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
        if log is None:
            log = stdout or self.dir / f"proc-{len(self._procs)}-{Path(cmd[0]).name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            popen = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        finally:
            fh.close()
        proc = Proc(popen=popen, what=what or " ".join(cmd), log=log,
                    start=_proc_starttime(popen.pid))
        self._procs.append(proc)
        self._all_procs.append(proc)
        self._save_registry()
        return proc

    def stop(self, proc: Proc, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the whole process group of `proc`; SIGKILL after `timeout`."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        # children left in the group (the leader is gone, the group may live on)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)
            self._save_registry()

    def exec(
        self,
        ns: Target | None,
        *cmd: str,
        timeout: float = 10.0,
        check: bool = False,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside `ns` (a netns name, Host, Container, or None for the root)."""
        netns = self.ns_of(ns)
        full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
        return _run(full, timeout=timeout, check=check, input=input, env=env)

    def vsctl(self, host: Host | str, *args: str) -> subprocess.CompletedProcess[str]:
        h = self.host(host)
        return _run(["ovs-vsctl", f"--db=unix:{h.db_sock}", *args], timeout=10)

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        """Call the controller API with the bearer token; `path` is relative to /api/v1
        unless it starts with /api/ or is /healthz."""
        if self._http is None:
            raise TestbedError("this testbed has no controller (daolinet=False)")
        if not (path.startswith("/api/") or path.startswith("/healthz")):
            path = "/api/v1" + (path if path.startswith("/") else "/" + path)
        try:
            return self._http.request(method, path, json=json, **kwargs)
        except httpx.ConnectError:
            # replica 0 is down: any other replica serves the whole API
            for i in range(1, self.replicas):
                if self.replica_procs[i] is None:
                    continue
                with contextlib.suppress(httpx.ConnectError):
                    return self._http.request(method, self.replica_url(i) + path, json=json,
                                              **kwargs)
            raise

    def api_json(self, method: str, path: str, json: Any = None) -> Any:
        r = self.api(method, path, json=json)
        if r.status_code >= 400:
            raise TestbedError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def create_network(self, name: str, subnet: str, gateway: str | None = None) -> Any:
        body: dict[str, Any] = {"name": name, "subnet": subnet}
        if gateway:
            body["gateway"] = gateway
        return self.api_json("POST", "/networks", body)

    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        """GET /api/v1/routes: the live connections."""
        path = "/routes" + (f"?host={host}" if host else "")
        return list(_items(self.api_json("GET", path)))

    # ------------------------------------------------------------------ containers

    def container(
        self,
        host: Host | str,
        name: str,
        network: str,
        ip: str | None = None,
        mac: str | None = None,
    ) -> Container:
        """Create netns ``dlt<id>c<name>`` and attach it to `network` on `host`.

        The agent turns tx checksum offload off on the container side (netdev datapath);
        with ``Testbed(container_tx_off=True)`` the testbed does it as well."""
        h = self.host(host)
        if name in self.containers:
            raise TestbedError(f"container {name!r} exists already")
        ns = f"{PREFIX}{self.id}c{name}"
        self._add_netns(ns)
        cmd = [str(BIN_DIR / "daolinet-hostnet"), "attach", "--socket", str(h.socket),
               "--netns", ns, "--network", network, "--name", name]
        if ip:
            cmd += ["--ip", ip]
        if mac:
            cmd += ["--mac", mac]
        res = self.exec(h, *cmd, "--json", timeout=30)
        if res.returncode != 0:
            raise TestbedError(
                f"attach of {name} on {h.name} failed (rc={res.returncode}):\n"
                f"{res.stdout}{res.stderr}\n--- {h.agent_log} ---\n{tail(h.agent_log, 20)}"
            )
        try:
            endpoint = json.loads(res.stdout[res.stdout.index("{"):])
        except ValueError as exc:
            raise TestbedError(f"attach --json printed no JSON: {res.stdout!r}") from exc
        ifnames = self.interfaces(ns)
        if not ifnames:
            raise TestbedError(f"attach of {name} left no interface in {ns}")
        if self.container_tx_off:
            for ifname in ifnames:
                self.exec(ns, "ethtool", "-K", ifname, "tx", "off")
        c = Container(
            name=name, ns=ns, ip=str(endpoint["ip"]).split("/")[0], mac=str(endpoint["mac"]),
            host=h.name, network=network, endpoint=endpoint, ifnames=ifnames,
        )
        self.containers[name] = c
        return c

    def detach(self, container: Container | str) -> subprocess.CompletedProcess[str]:
        c = container if isinstance(container, Container) else self.containers[container]
        h = self.host(c.host)
        res = self.exec(h, str(BIN_DIR / "daolinet-hostnet"), "detach", "--socket",
                        str(h.socket), c.name, timeout=30)
        if res.returncode == 0:
            self.containers.pop(c.name, None)
        return res

    def interfaces(self, ns: Target) -> list[str]:
        """Non-loopback interfaces of a namespace."""
        out = self.exec(ns, "ip", "-o", "link", "show").stdout
        names = []
        for line in out.splitlines():
            parts = line.split(":", 2)
            if len(parts) >= 2:
                n = parts[1].strip().split("@", 1)[0]
                if n != "lo":
                    names.append(n)
        return names

    # ------------------------------------------------------------------ traffic

    def ping(
        self,
        src: Target,
        dst_ip: Target,
        count: int = 1,
        timeout: float = 2.0,
        interval: float = 0.2,
        all_replies: bool = False,
    ) -> bool:
        """`ping -c count -W timeout` from `src`; True if a reply came back (every
        reply with `all_replies`)."""
        dst = self.ip_of(dst_ip)
        res = self.exec(
            src, "ping", "-n", "-c", str(count), "-W", _num(timeout), "-i", _num(interval), dst,
            timeout=count * (interval + timeout) + 5,
        )
        if res.returncode != 0:
            return False
        if not all_replies:
            return True
        m = re.search(r"(\d+) packets transmitted, (\d+) received", res.stdout)
        return bool(m and m.group(1) == m.group(2))

    def _listen(self, dst: Target, port: int, udp: bool) -> tuple[Proc, Path]:
        out = self.dir / f"nc-{secrets.token_hex(4)}.out"
        args = ["nc", "-4", "-d", "-l"] + (["-u"] if udp else []) + [str(port)]
        proc = self.spawn(dst, *args, what="nc listener", log=out)
        flag = "-Hlun" if udp else "-Hltn"
        try:
            wait_until(
                lambda: str(port) in self.exec(dst, "ss", flag, f"sport = :{port}").stdout,
                5.0, f"nc did not listen on {port} in {self.ns_of(dst)}",
            )
        except AssertionError:
            self.stop(proc)
            raise
        return proc, out

    def tcp_connect(
        self, src: Target, dst: Target, port: int = 5001, timeout: float = 5.0
    ) -> float | None:
        """Open a TCP connection src → dst:port and send a line through it (nc listener
        in dst's netns). Return the seconds the client took, None if it failed."""
        token = secrets.token_hex(8)
        server, out = self._listen(dst, port, udp=False)
        try:
            started = time.monotonic()
            client = self.exec(
                src, "nc", "-4", "-N", "-w", _num(timeout), self.ip_of(dst), str(port),
                input=token + "\n", timeout=timeout + 5,
            )
            elapsed = time.monotonic() - started
            if client.returncode != 0:
                return None
            with contextlib.suppress(AssertionError):
                wait_until(lambda: token in out.read_text(), timeout, "no data")
            return elapsed if token in out.read_text() else None
        finally:
            self.stop(server, timeout=2)
            out.unlink(missing_ok=True)

    def tcp_ok(self, src: Target, dst: Target, port: int = 5001, timeout: float = 5.0) -> bool:
        """A TCP connection src → dst:port carries data (nc listener in dst's netns)."""
        return self.tcp_connect(src, dst, port, timeout) is not None

    def udp_ok(self, src: Target, dst: Target, port: int = 5002, timeout: float = 3.0) -> bool:
        """One UDP datagram src → dst:port arrives (nc -u listener in dst's netns)."""
        token = secrets.token_hex(8)
        server, out = self._listen(dst, port, udp=True)
        try:
            self.exec(src, "nc", "-4", "-u", "-w", "1", self.ip_of(dst), str(port),
                      input=token + "\n", timeout=10)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: token in out.read_text(), timeout, "no datagram")
            return token in out.read_text()
        finally:
            self.stop(server, timeout=2)
            out.unlink(missing_ok=True)

    def traceroute(self, src: Target, dst_ip: Target, max_hops: int = 5) -> list[str | None]:
        """Hop addresses of `traceroute -n -q1 -w1 -m5` (None for a `*`)."""
        res = self.exec(src, "traceroute", "-n", "-q1", "-w1", f"-m{max_hops}",
                        self.ip_of(dst_ip), timeout=max_hops * 2 + 10)
        return parse_traceroute(res.stdout)

    def iperf3(self, src: Target, dst: Target, seconds: float = 2, port: int = 5201,
               extra: Sequence[str] = ()) -> dict[str, Any]:
        """Run an iperf3 test src → dst; return the client's JSON result."""
        server = self.spawn(dst, "iperf3", "-s", "-1", "-p", str(port), what="iperf3 -s")
        try:
            wait_until(
                lambda: str(port) in self.exec(dst, "ss", "-Hltn", f"sport = :{port}").stdout,
                5.0, f"iperf3 server did not listen in {self.ns_of(dst)}",
            )
            res = self.exec(src, "iperf3", "-c", self.ip_of(dst), "-p", str(port), "-J",
                            "-t", _num(seconds), *extra, timeout=seconds + 30)
            try:
                return dict(json.loads(res.stdout))
            except ValueError as exc:
                raise TestbedError(f"iperf3 printed no JSON: {res.stdout}{res.stderr}") from exc
        finally:
            self.stop(server, timeout=2)

    # ------------------------------------------------------------------ switch/kernel state

    def flows(self, host: Host | str, table: int | None = None) -> list[str]:
        """Lines of `ovs-ofctl -O OpenFlow13 dump-flows` on the host's br-dl."""
        h = self.host(host)
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{h.mgmt}"]
        if table is not None:
            cmd.append(f"table={table}")
        res = _run(cmd, timeout=10, check=True)
        return [
            line.strip() for line in res.stdout.splitlines()
            if line.strip() and not line.startswith(("OFPST_FLOW", "NXST_FLOW"))
        ]

    def parsed_flows(self, host: Host | str, table: int | None = None) -> list[Flow]:
        return [Flow.parse(line) for line in self.flows(host, table)]

    def connection_flows(self, host: Host | str) -> list[Flow]:
        """Per-connection flows: table 1, priority 100."""
        return [f for f in self.parsed_flows(host, 1) if f.priority == PRIO_CONNECTION]

    def kernel_routes(self, host: Host | str) -> list[str]:
        """`ip -4 route show proto 211` in the host namespace."""
        res = self.exec(self.host(host), "ip", "-4", "route", "show", "proto",
                        str(ROUTE_PROTO), check=True)
        return [line.strip() for line in res.stdout.splitlines() if line.strip()]

    def parsed_kernel_routes(self, host: Host | str) -> list[KernelRoute]:
        routes = []
        for line in self.kernel_routes(host):
            words = line.split()
            r = KernelRoute(raw=line, dst=words[0].removesuffix("/32"))
            for key, value in itertools.pairwise(words):
                if key == "via":
                    r.via = value
                elif key == "dev":
                    r.dev = value
            routes.append(r)
        return routes

    def via_routes(self, host: Host | str) -> list[KernelRoute]:
        return [r for r in self.parsed_kernel_routes(host) if r.via]

    def is_idle(self) -> bool:
        """No host has a flow above priority 0 in table 1 or a `via` route."""
        return all(
            all(f.priority == PRIO_MISS for f in self.parsed_flows(h, 1))
            and not self.via_routes(h)
            for h in self.hosts.values()
        )

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every connection has expired everywhere."""
        limit = timeout if timeout is not None else self.idle_timeout * 3 + 15
        self.wait_until(self.is_idle, limit, "connections did not expire",
                        detail=self.state_dump)

    def wait_until(self, predicate: Callable[[], T], timeout: float, message: str,
                   interval: float = 0.1, detail: Callable[[], str] | None = None) -> T:
        return wait_until(predicate, timeout, message, interval, detail)

    # ------------------------------------------------------------------ diagnostics

    def state_dump(self) -> str:
        parts = []
        for h in self.hosts.values():
            try:
                flows = "\n  ".join(self.flows(h, 1))
            except Exception as exc:
                flows = f"<{exc}>"
            try:
                routes = "\n  ".join(self.kernel_routes(h))
            except Exception as exc:
                routes = f"<{exc}>"
            parts.append(f"{h.name} table 1:\n  {flows}\n{h.name} routes:\n  {routes}")
        return "\n".join(parts)

    def log_tails(self, lines: int = 30) -> str:
        logs: list[Path] = []
        if self.daolinet:
            logs.append(self.controller_log)
        for h in self.hosts.values():
            logs += [h.agent_log, h.vswitchd_log] if self.daolinet else [h.vswitchd_log]
        return "\n".join(f"--- {p} ---\n{tail(p, lines)}" for p in logs)

    # ------------------------------------------------------------------ teardown

    def resources(self) -> dict[str, list[Any]]:
        """What of this testbed still exists (netns, root links, live processes)."""
        prefix = f"{PREFIX}{self.id}"
        return {
            "netns": [n for n in _netns_list() if n.startswith(prefix)],
            "links": [n for n in _root_links() if n.startswith(prefix)],
            "processes": [p.pid for p in self._all_procs if _alive(p.pid, p.start)],
        }

    def close(self) -> None:
        if self._closed or not self._started:
            return
        self._closed = True
        errors: list[str] = []
        # containers first (their processes), then agents, controller, OVS
        ordered = sorted(
            self._procs,
            key=lambda p: 0 if p.what.startswith(("nc", "iperf")) else
            1 if p.what.startswith("agent") else
            2 if p.what == "daolinet-controller" else
            3 if p.what.startswith("ovs-vswitchd") else 4,
        )
        for proc in ordered:
            try:
                self.stop(proc, timeout=5)
            except Exception as exc:
                errors.append(f"stop {proc.what}: {exc}")
        for ns in reversed(self._netns):
            try:
                if ns in _netns_list():
                    _kill_netns(ns)
            except Exception as exc:
                errors.append(f"netns {ns}: {exc}")
        for link in reversed(self._links):
            if link in _root_links():
                _run(["ip", "link", "delete", link])
        if self._forward_added:
            _run(["iptables", "-D", "FORWARD", *self._forward_rule])
        for rule in self._fw_rules:
            _run(["iptables", "-D", "FORWARD", *rule])
        for bridge in self._store_bridges:
            bridge.close()
        if self.id:
            _remove_wg_sockets({self.id})
        if self._http is not None:
            self._http.close()
        if self.dir != Path() and self.dir.exists() and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.id:
            self.registry_file.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if errors:
            raise TestbedError("teardown problems: " + "; ".join(errors))


def _exit_on_sigterm() -> None:
    """Turn a plain SIGTERM into SystemExit so teardown and atexit still run."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


# --------------------------------------------------------------------------- parsing


def parse_traceroute(output: str) -> list[str | None]:
    hops: list[str | None] = []
    for line in output.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)", line)
        if not m:
            continue
        addr = m.group(2)
        hops.append(None if addr == "*" else addr)
    return hops


def _items(data: Any) -> Iterable[dict[str, Any]]:
    """A list answer, or the list inside a wrapper object ({"items": [...]} etc.)."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list):
                return value
    return []


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
