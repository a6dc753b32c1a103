"""The host's WireGuard interface: the site-to-site mesh and per-connection allowed-ips.

One interface per host (name configurable and unique per machine, since
wireguard-go keeps its control socket in /var/run/wireguard, shared by every
network namespace).  Kernel WireGuard where the kernel has it, wireguard-go
otherwise; both are configured through the `wg` tool, so one code path serves
both (docs/architecture.md, "Sites").

* `WgConfig` is the provisioning file (JSON) that Ansible writes and
  `daolinet-hostnet wg-up --config FILE` / the agent's `--wireguard FILE` read.
* `ensure_host` creates the interface, the private key (generated on the host,
  mode 0600, never sent anywhere), the tunnel address, MTU, MSS clamping and
  forwarding; `WireGuard.set_mesh` makes the peers those of `controller.datapath.sites`.
* `WireGuard` keeps the per-connection allowed-ips (route kind `wg`) level-triggered:
  the allowed-ips of a peer are its tunnel addresses plus the container addresses
  whose routes go through it, and nothing else, so an idle host pair holds no
  per-connection state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.agents.messages import MeshHost
from controller.datapath.sites import DEFAULT_KEEPALIVE, PeerSpec, mesh_peers
from controller.desired.addresses import (
    check_endpoint,
    check_host_address,
    field_check,
    usable_endpoint,
)
from controller.desired.models import KernelRoute
from hostnet.host.netlink import link_exists

log = logging.getLogger("hostnet.host.wireguard")

IPv4 = ipaddress.IPv4Address
UAPI_DIR = Path("/var/run/wireguard")
DEFAULT_PORT = 51820
DEFAULT_MTU = 1420  # 1500 - 80: room for an IPv6 outer header, as wg-quick does
NFT_TABLE = "daolinet_wg"


class WireGuardError(Exception):
    """A WireGuard operation failed; the message says which and why."""


class WgConfig(BaseModel):
    """The provisioning file of one host."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="this host's daolinet name")
    site: str = "default"
    interface: str = Field(max_length=15, pattern=r"^[A-Za-z0-9_.-]+$")
    private_key_file: Path
    address: ipaddress.IPv4Interface = Field(description="tunnel address with prefix")
    listen_port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    endpoint: Annotated[str, AfterValidator(field_check(check_endpoint, "endpoint"))] | None = (
        Field(default=None, description="IP:PORT other sites reach this host at; null: behind NAT")
    )
    relay: bool = False
    mtu: int = Field(default=DEFAULT_MTU, ge=576, le=9000)
    keepalive: int = Field(default=DEFAULT_KEEPALIVE, ge=0, le=65535)
    implementation: Literal["auto", "kernel", "userspace"] = "auto"
    mss_clamp: bool = True
    hosts: list[MeshHost] = Field(default_factory=list, description="the mesh (every host)")

    @field_validator("address")
    @classmethod
    def _tunnel_address(cls, address: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
        field_check(check_host_address, "address")(address.ip)
        return address

    @classmethod
    def load(cls, path: Path) -> WgConfig:
        try:
            return cls.model_validate_json(path.read_text())
        except OSError as exc:
            raise WireGuardError(f"cannot read {path}: {exc.strerror}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise WireGuardError(f"{path}: {loc}: {first['msg']}") from None

    def me(self, public_key: str | None) -> MeshHost:
        return MeshHost(
            name=self.name, site=self.site, wg_public_key=public_key,
            wg_endpoint=self.endpoint, tunnel_address=self.address.ip, relay=self.relay,
        )


# --- commands ------------------------------------------------------------------------


def _run(cmd: Sequence[str], *, input: str | None = None, timeout: float = 10.0) -> str:
    try:
        proc = subprocess.run(
            list(cmd), input=input, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise WireGuardError(f"`{cmd[0]}` is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise WireGuardError(f"`{' '.join(cmd)}` timed out") from exc
    if proc.returncode != 0:
        err = " ".join((proc.stderr or proc.stdout).split())
        raise WireGuardError(f"`{' '.join(cmd)}` failed: {err}")
    return proc.stdout


def implementation_of(name: str) -> str:
    """"userspace" when wireguard-go serves `name` (its UAPI socket exists), else "kernel"."""
    return "userspace" if (UAPI_DIR / f"{name}.sock").exists() else "kernel"


def ensure_interface(name: str, implementation: str = "auto") -> str:
    """Create the WireGuard interface unless it exists; which implementation runs it."""
    if link_exists(name):
        return implementation_of(name)
    if implementation in ("auto", "kernel"):
        try:
            _run(["ip", "link", "add", name, "type", "wireguard"])
            return "kernel"
        except WireGuardError as exc:
            if implementation == "kernel":
                raise WireGuardError(f"no kernel WireGuard for {name}: {exc}") from exc
            log.info("kernel WireGuard unavailable (%s); using wireguard-go", exc)
    if shutil.which("wireguard-go") is None:
        raise WireGuardError("neither kernel WireGuard nor wireguard-go is available")
    # wireguard-go daemonizes itself (its own session): it outlives this process.
    _run(["wireguard-go", name], timeout=15)
    deadline = time.monotonic() + 10
    while not (link_exists(name) and (UAPI_DIR / f"{name}.sock").exists()):
        if time.monotonic() > deadline:
            raise WireGuardError(f"wireguard-go did not create {name}")
        time.sleep(0.05)
    return "userspace"


def generate_key(path: Path) -> None:
    """Write a new private key to `path` (mode 0600, created that way: never readable)."""
    key = _run(["wg", "genkey"]).strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def ensure_key(path: Path) -> str:
    """The public key of the private key in `path`, generating one if there is none."""
    if not path.exists():
        generate_key(path)
    mode = path.stat().st_mode & 0o777
    if mode != 0o600:
        os.chmod(path, 0o600)
    return public_key_of(path)


def public_key_of(path: Path) -> str:
    return _run(["wg", "pubkey"], input=path.read_text()).strip()


def set_mss_clamp(interface: str, enabled: bool = True) -> None:
    """Clamp the MSS of TCP SYNs leaving through `interface` to its path MTU.

    Containers keep MTU 1500; a full-size segment then never needs fragmenting or
    an ICMP "fragmentation needed" from the underlay (which may block ICMP).
    """
    if not enabled:
        with contextlib.suppress(WireGuardError):
            _run(["nft", "delete", "table", "ip", NFT_TABLE])
        return
    ruleset = (
        f"table ip {NFT_TABLE}\n"
        f"delete table ip {NFT_TABLE}\n"
        f"table ip {NFT_TABLE} {{\n"
        "  chain clamp {\n"
        "    type filter hook forward priority mangle; policy accept;\n"
        f'    oifname "{interface}" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n'
        f'    iifname "{interface}" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n'
        "  }\n"
        "}\n"
    )
    _run(["nft", "-f", "-"], input=ruleset)


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    with contextlib.suppress(OSError):
        if path.read_text().strip() != value:
            path.write_text(value)


def ensure_host(cfg: WgConfig) -> tuple[str, str]:
    """Interface, key, address, MTU, listen port, MSS clamp, forwarding (idempotent).

    Returns (public key, implementation).  Peers are not touched here.
    """
    impl = ensure_interface(cfg.interface, cfg.implementation)
    public = ensure_key(cfg.private_key_file)
    _run(["wg", "set", cfg.interface, "private-key", str(cfg.private_key_file),
          "listen-port", str(cfg.listen_port)])
    _run(["ip", "address", "replace", str(cfg.address), "dev", cfg.interface])
    _run(["ip", "link", "set", cfg.interface, "mtu", str(cfg.mtu), "up"])
    _sysctl("net.ipv4.ip_forward", "1")  # hosts route; a relay routes between peers
    set_mss_clamp(cfg.interface, cfg.mss_clamp)
    return public, impl


# --- peers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerState:
    public_key: str
    endpoint: str | None
    allowed: frozenset[str]  # "a.b.c.d/32"
    keepalive: int
    latest_handshake: int = 0


def parse_dump(text: str) -> tuple[str, list[PeerState]]:
    """`wg show IF dump` → (public key, peers)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "", []
    own = lines[0].split("\t")
    public = own[1] if len(own) > 1 else ""
    peers = []
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        allowed = frozenset() if f[3] == "(none)" else frozenset(f[3].split(","))
        peers.append(PeerState(
            public_key=f[0],
            endpoint=None if f[2] == "(none)" else f[2],
            allowed=allowed,
            keepalive=0 if f[7] == "off" else int(f[7]),
            latest_handshake=int(f[4]) if f[4].isdigit() else 0,
        ))
    return public, peers


def _host32(ip: IPv4 | str) -> str:
    return f"{ip}/32"


@dataclass
class WireGuard:
    """The live WireGuard state of one host: mesh peers + per-connection allowed-ips."""

    interface: str
    peers: list[PeerSpec] = field(default_factory=list)
    dynamic: dict[IPv4, IPv4] = field(default_factory=dict)  # container dst -> tunnel via

    # reading --------------------------------------------------------------------------
    def dump(self) -> tuple[str, list[PeerState]]:
        return parse_dump(_run(["wg", "show", self.interface, "dump"]))

    def public_key(self) -> str:
        return self.dump()[0]

    # planning (pure) ---------------------------------------------------------------
    def peer_for(self, via: IPv4) -> PeerSpec | None:
        for p in self.peers:
            if via in p.tunnels:
                return p
        return None

    def wanted(self, spec: PeerSpec) -> frozenset[str]:
        dsts = {d for d, v in self.dynamic.items() if v in spec.tunnels}
        return frozenset(_host32(x) for x in (*spec.tunnels, *dsts))

    def plan(
        self, current: Iterable[PeerState], only: set[str] | None = None,
        dropped: Iterable[str] = (),
    ) -> list[str]:
        """`wg set` arguments that make the peers right (empty: nothing to do).

        `only` limits the work to these public keys (a delta touches few peers).
        A peer that is not wanted is removed when a wanted peer takes over one of
        its tunnel addresses (a rotated key), or when it is `dropped`: a peer of an
        earlier mesh that the new one no longer has (its host was removed); peers
        provisioned by someone else and not known here are left alone.
        """
        have = {p.public_key: p for p in current}
        tunnels = {_host32(t) for p in self.peers for t in p.tunnels}
        args: list[str] = []
        wanted_keys = {p.public_key for p in self.peers}
        gone = set(dropped) - wanted_keys
        for key, p in sorted(have.items()):
            if key not in wanted_keys and (key in gone or p.allowed & tunnels):
                args += ["peer", key, "remove"]
        for spec in self.peers:
            if only is not None and spec.public_key not in only:
                continue
            allowed = self.wanted(spec)
            cur = have.get(spec.public_key)
            if (
                cur is not None
                and cur.allowed == allowed
                and cur.keepalive == spec.keepalive
                and (spec.endpoint is None or _same_endpoint(cur.endpoint, spec.endpoint))
            ):
                continue
            args += ["peer", spec.public_key]
            endpoint = usable_endpoint(spec.endpoint)  # never a value `wg set` would resolve
            if endpoint is not None:
                args += ["endpoint", endpoint]
            args += ["persistent-keepalive", str(spec.keepalive) if spec.keepalive else "off"]
            args += ["allowed-ips", ",".join(sorted(allowed))]
        return args

    # applying ---------------------------------------------------------------------
    def _apply(self, only: set[str] | None = None, dropped: Iterable[str] = ()) -> None:
        _, current = self.dump()
        args = self.plan(current, only, dropped)
        if args:
            _run(["wg", "set", self.interface, *args])

    def set_mesh(self, peers: list[PeerSpec]) -> None:
        """The mesh peers now: a peer of the previous mesh that is not among them (its
        host was removed) goes, with the per-connection addresses routed through it."""
        keys = {p.public_key for p in peers}
        gone = [p for p in self.peers if p.public_key not in keys]
        through = {t for p in gone for t in p.tunnels} - {t for p in peers for t in p.tunnels}
        self.peers = peers
        self.dynamic = {d: v for d, v in self.dynamic.items() if v not in through}
        self._apply(dropped={p.public_key for p in gone})

    def set_routes(self, routes: Iterable[KernelRoute]) -> None:
        """A snapshot: exactly these `wg` routes' destinations (level-triggered)."""
        self.dynamic = {r.dst: r.via for r in routes if r.kind == "wg" and r.via is not None}
        self._apply()

    def change_routes(self, add: Iterable[KernelRoute], remove: Iterable[KernelRoute]) -> None:
        touched: set[str] = set()
        for r in remove:
            # Matched by destination and via whatever its kind: once the via's host
            # is removed, the controller no longer knows it was a tunnel address.
            if r.via is not None and self.dynamic.get(r.dst) == r.via:
                del self.dynamic[r.dst]
                if r.via is not None and (p := self.peer_for(r.via)) is not None:
                    touched.add(p.public_key)
        for r in add:
            if r.kind == "wg" and r.via is not None:
                old = self.dynamic.get(r.dst)
                if old is not None and old != r.via and (p := self.peer_for(old)) is not None:
                    touched.add(p.public_key)
                self.dynamic[r.dst] = r.via
                if (p := self.peer_for(r.via)) is not None:
                    touched.add(p.public_key)
        if touched:
            self._apply(touched)

    # key rotation -----------------------------------------------------------------
    @staticmethod
    def new_key(private_key_file: Path) -> str:
        """Generate the next key pair next to the current one; its public key."""
        pending = private_key_file.with_name(private_key_file.name + ".new")
        generate_key(pending)
        return public_key_of(pending)

    def commit_key(self, private_key_file: Path) -> str:
        """Switch to the pending key pair, then make every peer handshake at once."""
        pending = private_key_file.with_name(private_key_file.name + ".new")
        if not pending.exists():
            raise WireGuardError("no pending key (wg-keygen first)")
        pending.replace(private_key_file)
        _run(["wg", "set", self.interface, "private-key", str(private_key_file)])
        self.poke()
        return public_key_of(private_key_file)

    def poke(self) -> None:
        """Send one datagram to every peer's tunnel addresses: starts the handshakes."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in self.peers:
                for t in p.tunnels:
                    with contextlib.suppress(OSError):
                        s.sendto(b"", (str(t), 9))


def _same_endpoint(have: str | None, want: str) -> bool:
    return have == want


def peers_for(cfg: WgConfig, public_key: str, hosts: Iterable[MeshHost]) -> list[PeerSpec]:
    """The mesh peers of this host from a host list (the file's, or the controller's)."""
    me = cfg.me(public_key)
    others = [_reachable(h) for h in hosts if h.name != cfg.name]
    return mesh_peers(me, [*others, me], cfg.keepalive)


def _reachable(host: MeshHost) -> MeshHost:
    """`host`, as behind NAT if its endpoint is not IPv4:PORT: it may still reach this
    host, and `wg set` never sees a value it would try to resolve as a name (on the
    route thread, for a minute: docs/security.md, "Validation")."""
    if host.wg_endpoint is None or usable_endpoint(host.wg_endpoint) is not None:
        return host
    log.error("host %s: wg_endpoint %r is not IPv4:PORT; treated as behind NAT",
              host.name, host.wg_endpoint)
    return host.model_copy(update={"wg_endpoint": None})


def merge_hosts(*lists: Iterable[MeshHost]) -> list[MeshHost]:
    """Host lists by name, later lists winning (the controller's over the file's)."""
    by_name: dict[str, MeshHost] = {}
    for hosts in lists:
        for h in hosts:
            by_name[h.name] = h
    return [by_name[n] for n in sorted(by_name)]


def wg_up(cfg: WgConfig) -> dict[str, object]:
    """Provision this host's side of the mesh from its file (the `wg-up` command)."""
    public, impl = ensure_host(cfg)
    wg = WireGuard(cfg.interface)
    # keep the per-connection allowed-ips an agent may hold: only mesh peers change
    _, current = wg.dump()
    peers = peers_for(cfg, public, cfg.hosts)
    tunnels = {t for p in peers for t in p.tunnels}
    for p in current:
        for a in p.allowed:
            ip = IPv4(a.split("/")[0])
            if ip not in tunnels and a.endswith("/32"):
                for spec in peers:
                    if spec.public_key == p.public_key:
                        wg.dynamic[ip] = spec.tunnels[0]
    wg.set_mesh(peers)
    return {
        "name": cfg.name, "interface": cfg.interface, "public_key": public,
        "implementation": impl, "tunnel_address": str(cfg.address.ip),
        "endpoint": cfg.endpoint, "peers": [p.name for p in peers],
    }


def to_json(data: object) -> str:
    return json.dumps(data, sort_keys=True)
