"""Sites: mesh peers (controller/datapath/sites.py), WireGuard planning (hostnet/host/wireguard.py)
and the route kinds the core asks for across sites (docs/architecture.md, "Sites")."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from controller.datapath.sites import crosses, mesh_peers, relay_for
from controller.desired.models import Host, KernelRoute
from hostnet.host.routes import InstalledRoute, plan_snapshot
from hostnet.host.wireguard import MeshHost, PeerState, WgConfig, WireGuard, parse_dump
from tests.unit.flowsim import Lab

IP = ipaddress.IPv4Address
KEY = {n: (n * 43)[:43].replace("h", "A") + "=" for n in ("h1", "h2", "h3", "h4", "h5")}


def member(name: str, site: str, n: int, nat: bool = False, relay: bool = False) -> MeshHost:
    return MeshHost(
        name=name, site=site, wg_public_key=KEY[name], tunnel_address=IP(f"198.19.0.{n}"),
        wg_endpoint=None if nat else f"198.18.{n}.1:51820", relay=relay,
    )


MESH = [
    member("h1", "a", 1), member("h2", "a", 2), member("h3", "b", 3, relay=True),
    member("h4", "c", 4, nat=True), member("h5", "d", 5, nat=True),
]


def test_peers_are_hosts_of_other_sites() -> None:
    peers = {p.name: p for p in mesh_peers(MESH[0], MESH)}
    assert set(peers) == {"h3", "h4", "h5"}
    assert peers["h3"].endpoint == "198.18.3.1:51820" and peers["h3"].keepalive == 0
    assert peers["h4"].endpoint is None  # learnt from the NATed host's handshake
    assert not crosses(MESH[0], MESH[1])


def test_nated_host_keeps_alive_and_reaches_nated_host_through_relay() -> None:
    assert relay_for(MESH[3], MESH[4], MESH) == MESH[2]
    assert relay_for(MESH[0], MESH[4], MESH) is None
    peers = {p.name: p for p in mesh_peers(MESH[3], MESH, keepalive=25)}
    assert set(peers) == {"h1", "h2", "h3"}
    assert {p.keepalive for p in peers.values()} == {25}
    assert peers["h3"].tunnels == (IP("198.19.0.3"), IP("198.19.0.5"))
    relay = {p.name: p for p in mesh_peers(MESH[2], MESH)}
    assert set(relay) == {"h1", "h2", "h4", "h5"}


def test_two_nated_hosts_without_relay_are_not_peers() -> None:
    mesh = [m.model_copy(update={"relay": False}) for m in MESH]
    assert "h5" not in {p.name for p in mesh_peers(mesh[3], mesh)}


def test_wg_plan_sets_allowed_ips_of_the_peer_holding_the_tunnel() -> None:
    wg = WireGuard("wg-h4", peers=mesh_peers(MESH[3], MESH))
    have = [PeerState(KEY["h3"], "198.18.3.1:51820", frozenset({"198.19.0.3/32",
                                                                 "198.19.0.5/32"}), 25)]
    wg.dynamic = {IP("10.1.0.9"): IP("198.19.0.5")}
    args = wg.plan(have, only={KEY["h3"]})
    assert args == ["peer", KEY["h3"], "endpoint", "198.18.3.1:51820",
                    "persistent-keepalive", "25",
                    "allowed-ips", "10.1.0.9/32,198.19.0.3/32,198.19.0.5/32"]
    wg.dynamic = {}
    assert wg.plan(have, only={KEY["h3"]}) == []  # idle: tunnel addresses only


def test_wg_plan_replaces_a_rotated_key_and_keeps_unknown_peers() -> None:
    wg = WireGuard("wg-h1", peers=mesh_peers(MESH[0], MESH))
    old = PeerState("OLD" + KEY["h3"][3:], "198.18.3.1:51820",
                    frozenset({"198.19.0.3/32", "10.1.0.9/32"}), 0)
    stranger = PeerState("X" * 43 + "=", None, frozenset({"192.0.2.1/32"}), 0)
    args = wg.plan([old, stranger])
    assert args[:3] == ["peer", old.public_key, "remove"]
    assert stranger.public_key not in args


def test_parse_dump() -> None:
    text = ("priv\tpub\t51820\toff\n"
            "K1=\t(none)\t198.18.3.1:51820\t198.19.0.3/32,10.1.0.9/32\t1700000000\t1\t2\toff\n"
            "K2=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n")
    public, peers = parse_dump(text)
    assert public == "pub"
    assert peers[0].allowed == {"198.19.0.3/32", "10.1.0.9/32"}
    assert peers[1].endpoint is None and peers[1].keepalive == 25 and not peers[1].allowed


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "wg.json"
    path.write_text('{"name": "h1", "interface": "wg-h1", "private_key_file": "/k",'
                    ' "address": "198.19.0.1/24"}')
    cfg = WgConfig.load(path)
    assert cfg.me("K").tunnel_address == IP("198.19.0.1") and cfg.listen_port == 51820


def test_wg_route_is_a_kernel_route_via_the_tunnel_address() -> None:
    want = KernelRoute(kind="wg", dst=IP("10.1.0.9"), via=IP("198.19.0.5"))
    ok = InstalledRoute("10.1.0.9", "198.19.0.5", 7)
    assert plan_snapshot([want], [ok], [], 3).empty
    assert plan_snapshot([want], [InstalledRoute("10.1.0.9", "198.18.0.5", 7)], [],
                         3).install == [want]


# --- the core ----------------------------------------------------------------------


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2", "h3", "h4", "h5"], idle_timeout=10)
    for i, m in enumerate(MESH, start=1):
        h = lab.index.host(m.name)
        assert h is not None
        lab.index.put_host(Host(**{**h.model_dump(), **m.model_dump(), "dpid": i}))
    lab.network("web", "10.1.0.0/24")
    return lab


def routes(lab: Lab, host: str) -> dict[str, tuple[str, str]]:
    return {str(d): (r.kind, str(r.via)) for d, r in lab.agents[host].routes.items()
            if r.kind != "local"}


def test_same_site_uses_underlay_and_cross_site_uses_tunnel(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.container("h3", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert routes(lab, "h1") == {
        "10.1.0.6": ("via", "198.18.0.12"),  # same site: underlay address
        "10.1.0.7": ("wg", "198.19.0.3"),  # other site: tunnel address
    }
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    assert routes(lab, "h2") == {"10.1.0.5": ("via", "198.18.0.11")}
    paths = {(r["src"], r["dst"]): r["path"] for r in lab.core.live_routes(lab.view(), lab.now)}
    assert paths == {("a", "b"): "underlay", ("a", "c"): "wireguard"}


def test_nated_pair_goes_through_relay_which_holds_routes_only_while_needed(lab: Lab) -> None:
    a = lab.container("h4", "a", "web", "10.1.0.5")
    lab.container("h5", "b", "web", "10.1.0.6")
    lab.agents["h3"].auto_ack = False
    lab.send("h4", lab.ip_packet(a, "10.1.0.6"))
    assert lab.core.state.pending  # waits for the relay's ack too
    lab.release("h3")
    assert not lab.core.state.pending
    assert routes(lab, "h4") == {"10.1.0.6": ("wg", "198.19.0.5")}
    assert routes(lab, "h5") == {"10.1.0.5": ("wg", "198.19.0.4")}
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.4"),
                                 "10.1.0.6": ("wg", "198.19.0.5")}
    assert lab.core.live_routes(lab.view(), lab.now)[0]["path"] == "relay:h3"
    lab.agents["h3"].auto_ack = True
    lab.advance(11)
    for h in ("h3", "h4", "h5"):
        assert routes(lab, h) == {}, h


def test_receiver_keeps_the_senders_address_while_the_sender_still_sends(lab: Lab) -> None:
    """A cross-site connection whose receiving side idled out (a link outage, or
    one-way traffic) must not lose the sender's allowed-ips there: WireGuard would
    drop the sender's retransmissions before any switch could set it up again."""
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h3", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    # a keeps sending (its flow on h1 stays in use); nothing reaches h3, whose flows
    # of the connection idle out.
    for _ in range(3):
        lab.advance(5)
        lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert not [f for f in lab.switches["h3"].flows(1) if f.priority == 100]
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    # Once the sender stops too, everything goes.
    lab.advance(11)
    assert routes(lab, "h3") == {} and routes(lab, "h1") == {}
