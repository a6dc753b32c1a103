"""Names and addresses of one testbed, derived from its id and its underlay subnets.

Every name starts with ``dlt<id>`` (kernel names have 15 characters at most). Host N
has underlay address 198.18.X.(10+N) on its site's segment (X: the site's octet) and,
with WireGuard, tunnel address 198.19.X.(10+N) (X: the first site's octet).  The first
site's segment is ``dlt<id>ul``, the others ``dlt<id>u<i>``; the core router is
``dlt<id>r``, the NAT router of site i ``dlt<id>n<i>`` with its outside on a /30 of the
transit subnet.

Imports `registry` only (for the prefix).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from .registry import PREFIX

HOST_OFFSET = 10  # host N has underlay address 198.18.X.(10+N)


class Layout:
    """Where everything of one testbed is: pure names and arithmetic, nothing runs."""

    def __init__(
        self,
        ident: str,
        octets: Sequence[int],
        host_names: Sequence[str],
        sites: Mapping[str, str],
        *,
        wireguard: bool,
        nat_sites: Sequence[str] = (),
    ) -> None:
        # `octets`: the first site's underlay, then (with WireGuard) one per other site
        # and the transit subnet of the NAT routers
        self.id = ident
        self.octet = octets[0]
        self.host_names = list(host_names)
        self.sites = dict(sites)
        self.wireguard = wireguard
        self.nat_sites = set(nat_sites)
        self.site_octets: dict[str, int] = {}
        self.transit_octet = 0
        if wireguard:
            names = self.site_names
            self.site_octets = dict(zip(names, octets, strict=False))
            self.transit_octet = octets[len(names)]

    @staticmethod
    def subnets_needed(host_names: Sequence[str], sites: Mapping[str, str],
                       wireguard: bool) -> int:
        """How many 198.18.X.0/24 subnets a testbed of this shape takes."""
        if not wireguard:
            return 1
        probe = Layout("", [0], host_names, sites, wireguard=False)
        return len(probe.site_names) + 1

    def add_host(self, name: str, site: str) -> int:
        """A host joining later; its index."""
        self.host_names.append(name)
        self.sites[name] = site
        return len(self.host_names)

    # ------------------------------------------------------------------ underlay

    @property
    def bridge(self) -> str:
        """The first site's underlay bridge (the only one without sites)."""
        return f"{PREFIX}{self.id}ul"

    @property
    def root_ip(self) -> str:
        """The root namespace's address on the (first site's) underlay bridge."""
        return f"198.18.{self.octet}.1"

    @property
    def controller_ip(self) -> str:
        if self.wireguard:  # the controller runs in the first host's namespace
            return f"198.18.{self.octet}.{HOST_OFFSET + 1}"
        return self.root_ip

    @property
    def listen_ip(self) -> str:
        """Where the controller listens (every address of the first host with sites)."""
        return "0.0.0.0" if self.wireguard else self.controller_ip

    @property
    def underlay(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.18.{self.octet}.0/24")

    # ------------------------------------------------------------------ hosts

    def host_ns(self, index: int) -> str:
        return f"{PREFIX}{self.id}h{index}"

    def host_address(self, index: int, name: str) -> str:
        octet = self.site_octets.get(self.site_of(name), self.octet)
        return f"198.18.{octet}.{HOST_OFFSET + index}"

    def host_site(self, name: str) -> str | None:
        """The site an agent reports (None without sites)."""
        return self.site_of(name) if self.wireguard else self.sites.get(name)

    def host_bridge(self, name: str) -> str:
        """The underlay bridge a host's veth joins."""
        site = self.host_site(name)
        return self.site_bridge(site) if self.wireguard and site else self.bridge

    def tunnel_address(self, index: int) -> str:
        return f"198.19.{self.octet}.{HOST_OFFSET + index}"

    def wg_interface(self, index: int) -> str:
        return f"{PREFIX}{self.id}w{index}"

    def container_ns(self, name: str) -> str:
        return f"{PREFIX}{self.id}c{name}"

    # ------------------------------------------------------------------ sites

    @property
    def site_names(self) -> list[str]:
        """Sites in the order of their first host (the first is the controller's)."""
        out: list[str] = []
        for site in [*map(self.site_of, self.host_names), *self.sites.values()]:
            if site not in out:
                out.append(site)
        return out

    def site_of(self, name: str) -> str:
        return self.sites.get(name) or self.sites.get(self.host_names[0]) or "default"

    def site_octet(self, site: str) -> int:
        return self.site_octets.get(site, self.octet)

    def site_bridge(self, site: str) -> str:
        i = self.site_names.index(site)
        return self.bridge if i == 0 else f"{PREFIX}{self.id}u{i}"

    @property
    def router_ns(self) -> str:
        return f"{PREFIX}{self.id}r"

    def router_leg_link(self, i: int) -> str:
        """The root end of the core router's veth to the bridge of site i."""
        return f"{PREFIX}{self.id}r{i}"

    def nat_ns(self, site: str) -> str:
        return f"{PREFIX}{self.id}n{self.site_names.index(site)}"

    def nat_address(self, site: str) -> str:
        """The public (outside) address of a NAT site's router."""
        i = self.site_names.index(site)
        return f"198.18.{self.transit_octet}.{4 * i + 2}"

    def router_leg(self, site: str) -> tuple[str, str]:
        """(netns, interface) of the core router's link towards `site`."""
        i = self.site_names.index(site)
        return self.router_ns, (f"t{i}" if site in self.nat_sites else f"s{i}")
