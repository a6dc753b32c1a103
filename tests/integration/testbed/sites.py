"""The underlay and the sites of a testbed: Linux bridges in the root namespace, the
core router between sites (forwarding, ICMP dropped), the NAT routers (nftables
masquerade) in front of the sites behind NAT, and the WireGuard mesh the hosts of
different sites talk through (provisioned with ``daolinet-hostnet wg-up``, what
Ansible does in a deployment).

Imports `procs`, `layout`, `hosts`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .hosts import Host, HostBuilder
from .layout import Layout
from .procs import BIN_DIR, TestbedError, in_netns, run

_NO_ICMP = ("table inet dlt { chain noicmp { type filter hook forward priority 0; "
            "policy accept; meta l4proto icmp drop; }; }")
_MASQUERADE = ("table ip dltnat { chain natout { type nat hook postrouting priority 100; "
               'oifname "out" masquerade; }; }')
WG_PORT = 51820


class Underlay:
    """The bridges, routers and firewall rules of the underlay."""

    def __init__(self, layout: Layout, builder: HostBuilder) -> None:
        self._layout = layout
        self._builder = builder
        self._forward_rules: list[list[str]] = []

    def build(self) -> None:
        lay = self._layout
        self._add_bridge(lay.bridge, ipv4_only=lay.wireguard)
        run(["ip", "addr", "add", f"{lay.root_ip}/24", "dev", lay.bridge], check=True)
        if lay.wireguard:
            self._build_sites()

    def _add_bridge(self, bridge: str, *, ipv4_only: bool) -> None:
        self._builder.add_link(bridge, "type", "bridge", "stp_state", "0",
                               ipv4_only=ipv4_only)
        run(["ip", "link", "set", bridge, "up"], check=True)
        # A Docker engine in the root namespace sets FORWARD to DROP and makes bridged
        # traffic meet iptables (br_netfilter): let our own underlay through.
        rule = ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        if shutil.which("iptables") is not None and run(
            ["iptables", "-I", "FORWARD", *rule]
        ).returncode == 0:
            self._forward_rules.append(rule)

    def remove_rules(self) -> None:
        for rule in self._forward_rules:
            run(["iptables", "-D", "FORWARD", *rule])

    def _build_sites(self) -> None:
        """Site bridges, the core router (ICMP dropped) and NAT routers."""
        lay, ex = self._layout, self._builder.exec
        r = lay.router_ns
        self._builder.add_netns(r, ipv4_only=True)
        ex(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ex(r, "nft", "-f", "-", input=_NO_ICMP)
        for i, site in enumerate(lay.site_names):
            br = lay.site_bridge(site)
            if i > 0:
                self._add_bridge(br, ipv4_only=True)
            if site in lay.nat_sites:
                self._build_nat(i, site, br)
            else:
                self._router_leg(lay.router_leg_link(i), r, f"s{i}", br, site)

    def _router_leg(self, link: str, ns: str, ifname: str, bridge: str, site: str) -> None:
        """A veth from `bridge` to `ns` (interface `ifname`, the site's .254)."""
        self._builder.add_link(link, "type", "veth", "peer", "name", ifname, "netns", ns,
                               ipv4_only=True)
        run(["ip", "link", "set", link, "master", bridge, "up"], check=True)
        octet = self._layout.site_octet(site)
        self._builder.exec(ns, "ip", "addr", "add", f"198.18.{octet}.254/24", "dev", ifname)
        self._builder.exec(ns, "ip", "link", "set", ifname, "up")

    def _build_nat(self, i: int, site: str, bridge: str) -> None:
        """Behind NAT: inside leg on the site bridge, outside /30 to the core router."""
        lay, ex = self._layout, self._builder.exec
        r, n, t = lay.router_ns, lay.nat_ns(site), lay.transit_octet
        self._builder.add_netns(n, ipv4_only=True)
        self._router_leg(f"{n}u", n, "in", bridge, site)
        ex(r, "ip", "link", "add", f"t{i}", "type", "veth", "peer", "name", "out", "netns", n)
        ex(r, "ip", "addr", "add", f"198.18.{t}.{4 * i + 1}/30", "dev", f"t{i}")
        ex(r, "ip", "link", "set", f"t{i}", "up")
        ex(n, "ip", "addr", "add", f"{lay.nat_address(site)}/30", "dev", "out")
        ex(n, "ip", "link", "set", "out", "up")
        ex(n, "ip", "route", "add", "default", "via", f"198.18.{t}.{4 * i + 1}")
        ex(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ex(n, "nft", "-f", "-", input=_MASQUERADE)
        ex(n, "nft", "-f", "-", input=_NO_ICMP)


class WireGuard:
    """The WireGuard interfaces of the hosts and the mesh between them."""

    def __init__(self, layout: Layout, hosts: Mapping[str, Host],
                 relays: Sequence[str] = ()) -> None:
        self._layout = layout
        self._hosts = hosts
        self._relays = set(relays)

    def _endpoint(self, host: Host) -> str | None:
        return None if host.site in self._layout.nat_sites else f"{host.address}:{WG_PORT}"

    def _config(self, host: Host, mesh: bool) -> dict[str, Any]:
        assert host.tunnel is not None and host.wg_if is not None and host.site is not None
        cfg: dict[str, Any] = {
            "name": host.name,
            "site": host.site,
            "interface": host.wg_if,
            "private_key_file": str(host.dir / "wg.key"),
            "address": f"{host.tunnel}/24",
            "listen_port": WG_PORT,
            "endpoint": self._endpoint(host),
            "relay": host.name in self._relays,
            "implementation": "userspace",
        }
        if mesh:
            cfg["hosts"] = [
                {
                    "name": h.name, "site": h.site, "wg_public_key": h.wg_public_key,
                    "wg_endpoint": self._endpoint(h),
                    "tunnel_address": h.tunnel, "relay": h.name in self._relays,
                }
                for h in self._hosts.values()
                if h.wg_public_key
            ]
        return cfg

    def wg_up(self, host: Host, mesh: bool = True) -> dict[str, Any]:
        """Run `daolinet-hostnet wg-up` on a host (what Ansible does in a deployment)."""
        host.wg_config.write_text(json.dumps(self._config(host, mesh), indent=1))
        cmd = [str(BIN_DIR / "daolinet-hostnet"), "wg-up", "--config", str(host.wg_config)]
        res = run(in_netns(host.ns, cmd), timeout=30)
        if res.returncode != 0:
            raise TestbedError(f"wg-up on {host.name} failed: {res.stdout}{res.stderr}")
        out = dict(json.loads(res.stdout))
        host.wg_public_key = str(out["public_key"])
        return out

    def provision(self, hosts: Iterable[Host] | None = None) -> None:
        """Interface and key of each host first (wg-up prints the public key), then the
        mesh of every host known."""
        todo = list(hosts if hosts is not None else self._hosts.values())
        for h in todo:
            self.wg_up(h, mesh=False)
        for h in todo:
            self.wg_up(h, mesh=True)

    def dump(self, host: Host) -> list[dict[str, Any]]:
        """The peers of a host's WireGuard interface (`wg show IF dump`)."""
        assert host.wg_if is not None
        res = run(in_netns(host.ns, ["wg", "show", host.wg_if, "dump"]),
                  check=True)
        peers = []
        for line in res.stdout.splitlines()[1:]:
            f = line.split("\t")
            peers.append({
                "public_key": f[0], "endpoint": f[2],
                "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
                "latest_handshake": int(f[4]), "keepalive": f[7],
            })
        return peers
