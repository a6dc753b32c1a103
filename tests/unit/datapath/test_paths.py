"""The path between two hosts (controller/datapath/paths.py): what the core routes by
and GET /trace shows (docs/architecture.md, "Sites")."""

from __future__ import annotations

import ipaddress

from controller.datapath.paths import Hop, host_path, next_hop, trace_hops
from controller.desired.models import Host

IP = ipaddress.IPv4Address
KEY = "A" * 43 + "="
CONTAINER = IP("10.1.0.9")


def host(name: str, site: str, n: int, *, tunnel: bool = True, nat: bool = False,
         relay: bool = False) -> Host:  # fmt: skip
    """Host n: underlay 198.18.0.1n, tunnel 198.19.0.n, endpoint unless behind NAT."""
    return Host(
        name=name, address=IP(f"198.18.0.1{n}"), site=site, dpid=n,
        wg_public_key=KEY if tunnel else None,
        wg_endpoint=None if nat or not tunnel else f"198.18.0.1{n}:51820",
        tunnel_address=IP(f"198.19.0.{n}") if tunnel else None, relay=relay,
    )  # fmt: skip


H1, H2 = host("h1", "a", 1), host("h2", "a", 2)  # one site
H3 = host("h3", "b", 3, relay=True)  # another site, reachable, a relay
H4, H5 = host("h4", "c", 4, nat=True), host("h5", "d", 5, nat=True)  # behind NAT
H6 = host("h6", "e", 6, tunnel=False)  # another site, no tunnel
HOSTS = [H1, H2, H3, H4, H5, H6]


def every_host() -> list[Host]:
    return HOSTS


def no_listing() -> list[Host]:
    raise AssertionError("hosts listed where no relay can be on the path")


def test_same_host_goes_straight_to_the_container() -> None:
    path = host_path(H1, H1, no_listing)
    assert (path.kind, path.label, path.hops(), path.relay) == ("local", "local", [], None)
    assert trace_hops(H1, H1, CONTAINER, no_listing) == (
        "local", [Hop(CONTAINER, None, "container")]
    )


def test_same_site_goes_over_the_underlay() -> None:
    path = host_path(H1, H2, no_listing)
    assert (path.kind, path.label) == ("underlay", "underlay")
    assert next_hop(H1, H2) == IP("198.18.0.12")
    assert trace_hops(H1, H2, CONTAINER, no_listing) == ("underlay", [
        Hop(IP("198.18.0.11"), "h1", "underlay"),
        Hop(IP("198.18.0.12"), "h2", "underlay"),
        Hop(CONTAINER, None, "container"),
    ])  # fmt: skip
    # A host without a tunnel reaches other sites over the underlay too.
    assert host_path(H1, H6, no_listing).kind == "underlay"
    assert next_hop(H1, H6) == IP("198.18.0.16")


def test_across_sites_goes_through_the_tunnel_addresses() -> None:
    path = host_path(H1, H3, no_listing)  # h3 has an endpoint: no relay to look for
    assert (path.kind, path.label, path.relay) == ("wireguard", "wireguard", None)
    assert next_hop(H1, H3) == IP("198.19.0.3")
    assert trace_hops(H1, H3, CONTAINER, no_listing)[1] == [
        Hop(IP("198.19.0.1"), "h1", "tunnel"),
        Hop(IP("198.19.0.3"), "h3", "tunnel"),
        Hop(CONTAINER, None, "container"),
    ]
    # One end behind NAT reaches the other directly (it keeps the mapping open).
    assert host_path(H4, H1, every_host).kind == "wireguard"


def test_two_hosts_behind_nat_go_through_the_relay() -> None:
    path = host_path(H4, H5, every_host)
    assert (path.kind, path.label, path.relay) == ("relay", "relay:h3", H3)
    assert next_hop(H4, H5) == IP("198.19.0.5")  # the route; WireGuard sends it to h3
    assert trace_hops(H4, H5, CONTAINER, every_host) == ("relay:h3", [
        Hop(IP("198.19.0.4"), "h4", "tunnel"),
        Hop(IP("198.19.0.3"), "h3", "relay"),
        Hop(IP("198.19.0.5"), "h5", "tunnel"),
        Hop(CONTAINER, None, "container"),
    ])  # fmt: skip
    # No relay: labelled wireguard as before (the two are no WireGuard peers).
    assert host_path(H4, H5, lambda: [H1, H4, H5]).label == "wireguard"


def test_from_outside_enters_at_the_destination_host() -> None:
    assert trace_hops(None, H3, CONTAINER, no_listing) == ("external", [
        Hop(IP("198.18.0.13"), "h3", "underlay"), Hop(CONTAINER, None, "container"),
    ])  # fmt: skip
