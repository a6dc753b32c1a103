"""The agent's WireGuard inputs (docs/security.md, "Validation"): a bad endpoint in
the provisioning file stops the start with the field named; a bad endpoint from the
controller's mesh or the file's host list never reaches `wg set` (it would resolve it as
a name on the route thread), while good peers are set as before.  A host the
controller's mesh no longer names (removed) loses its peer."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from controller.datapath.sites import PeerSpec
from controller.desired.models import KernelRoute
from hostnet.host.wireguard import MeshHost, WgConfig, WireGuard, WireGuardError, peers_for

IP = ipaddress.IPv4Address
KEY = {n: n * 21 + "A=" for n in ("h1", "h2", "h3")}
BAD = ["1.2.3.4:5_1820", "1.2.3.4:+51820", "1.2.3.4:\u0665\u0661\u0668\u0662\u0660",
       "1.2.3.4:0", "1.2.3.4:65536", "vpn.example.org:51820", "1.2.3.4"]


def _file(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "wg.json"
    path.write_text(json.dumps({"name": "h1", "interface": "wg-h1", "private_key_file": "/k",
                                "address": "100.64.0.1/24", **fields}))
    return path


@pytest.mark.parametrize("endpoint", BAD)
def test_a_bad_endpoint_in_the_file_stops_the_start(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(WireGuardError, match=f"wg.json: endpoint: .*{endpoint[-5:]}"
                       "' is not IPv4:PORT"):
        WgConfig.load(_file(tmp_path, endpoint=endpoint))


@pytest.mark.parametrize("address", ["224.0.0.1/24", "0.0.0.0/8", "255.255.255.255/32"])
def test_a_bad_tunnel_address_in_the_file_stops_the_start(tmp_path: Path, address: str) -> None:
    with pytest.raises(WireGuardError, match=f"address: .*address {address.split('/')[0]} is"):
        WgConfig.load(_file(tmp_path, address=address))


def test_a_good_file_loads(tmp_path: Path) -> None:
    cfg = WgConfig.load(_file(tmp_path, endpoint="198.51.100.1:51820"))
    assert (cfg.endpoint, cfg.address.ip) == ("198.51.100.1:51820", IP("100.64.0.1"))


def _mesh(h2_endpoint: str | None) -> list[MeshHost]:
    return [
        MeshHost(name="h2", site="b", wg_public_key=KEY["h2"], wg_endpoint=h2_endpoint,
                 tunnel_address=IP("100.64.0.2")),
        MeshHost(name="h3", site="c", wg_public_key=KEY["h3"], wg_endpoint="198.51.100.3:51820",
                 tunnel_address=IP("100.64.0.3")),
    ]


@pytest.mark.parametrize("endpoint", BAD)
def test_a_bad_mesh_endpoint_never_reaches_wg_set(tmp_path: Path, endpoint: str) -> None:
    cfg = WgConfig.load(_file(tmp_path, site="a", endpoint="198.51.100.1:51820"))
    peers = {p.name: p for p in peers_for(cfg, KEY["h1"], _mesh(endpoint))}
    assert peers["h2"].endpoint is None  # as behind NAT: it may still reach this host
    args = WireGuard("wg-h1", peers=list(peers.values())).plan([])
    assert endpoint not in args
    assert args[:4] == ["peer", KEY["h2"], "persistent-keepalive", "off"]
    assert ["peer", KEY["h3"], "endpoint", "198.51.100.3:51820"] == args[6:10]


def test_a_behind_nat_host_with_a_bad_endpoint_is_no_peer_of_another(tmp_path: Path) -> None:
    cfg = WgConfig.load(_file(tmp_path, site="a"))  # this host is behind NAT too
    names = [p.name for p in peers_for(cfg, KEY["h1"], _mesh("1.2.3.4:5_1820"))]
    assert names == ["h3"]


@pytest.mark.parametrize("endpoint", BAD)
def test_plan_drops_a_bad_endpoint_it_is_handed(endpoint: str) -> None:
    """The last gate: a PeerSpec made elsewhere still cannot carry one to `wg set`."""
    spec = PeerSpec(name="h2", public_key=KEY["h2"], endpoint=endpoint,
                    tunnels=(IP("100.64.0.2"),))
    args = WireGuard("wg-h1", peers=[spec]).plan([])
    assert args == ["peer", KEY["h2"], "persistent-keepalive", "off",
                    "allowed-ips", "100.64.0.2/32"]


class FakeWg:
    """`wg show IF dump` and `wg set IF ...` of one interface, on a dict of peers."""

    def __init__(self) -> None:
        self.peers: dict[str, dict[str, Any]] = {}

    def run(self, cmd: Any, **_: Any) -> str:
        if cmd[:2] == ["wg", "show"]:
            lines = ["priv\tpub\t51820\toff"]
            for key, p in self.peers.items():
                allowed = ",".join(sorted(p["allowed"])) or "(none)"
                lines.append(f"{key}\t(none)\t{p.get('endpoint') or '(none)'}\t{allowed}"
                             f"\t0\t0\t0\t{p.get('keepalive', 'off')}")
            return "\n".join(lines) + "\n"
        assert cmd[:2] == ["wg", "set"]
        args, peer = list(cmd[3:]), None
        while args:
            word = args.pop(0)
            if word == "peer":
                peer = self.peers.setdefault(key := args.pop(0), {"allowed": set()})
            elif word == "remove":
                del self.peers[key]
            elif word == "allowed-ips":
                assert peer is not None
                peer["allowed"] = set(args.pop(0).split(","))
            else:
                assert peer is not None
                peer[word] = args.pop(0)
        return ""


def _tunnel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, FakeWg]:
    """The agent's Tunnel of h1 (site a), whose provisioning file lists h2 and h3."""
    from hostnet.agent.tunnel import Tunnel
    from hostnet.host import wireguard

    fake = FakeWg()
    monkeypatch.setattr(wireguard, "_run", fake.run)
    monkeypatch.setattr("hostnet.agent.tunnel.public_key_of", lambda _: KEY["h1"])
    mesh = [h.model_dump(mode="json") for h in _mesh("198.51.100.2:51820")]
    cfg = WgConfig.load(_file(tmp_path, site="a", endpoint="198.51.100.1:51820", hosts=mesh))
    tunnel = Tunnel("h1", None, host_exec=None, route_exec=None,  # type: ignore[arg-type]
                    key_switch_delay=0.5)
    tunnel.cfg, tunnel.wg = cfg, WireGuard(cfg.interface)
    return tunnel, fake


def test_a_host_the_controllers_mesh_leaves_out_loses_its_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host removal: the controller's mesh no longer names h3, so its peer goes with
    the container addresses routed through it, although the provisioning file (the
    bootstrap mesh) still lists it; h2 and its addresses stay."""
    tunnel, fake = _tunnel(tmp_path, monkeypatch)
    tunnel.apply_mesh([])  # at start: the file's hosts
    assert set(fake.peers) == {KEY["h2"], KEY["h3"]}
    controller = _mesh("198.51.100.2:51820")
    tunnel.apply_mesh(controller)
    wg = tunnel.wg
    wg.change_routes([KernelRoute(kind="wg", dst=IP("10.1.0.3"), via=IP("100.64.0.3")),
                      KernelRoute(kind="wg", dst=IP("10.1.0.2"), via=IP("100.64.0.2"))], [])
    assert fake.peers[KEY["h3"]]["allowed"] == {"100.64.0.3/32", "10.1.0.3/32"}
    tunnel.apply_mesh(controller[:1])  # h3 removed
    assert set(fake.peers) == {KEY["h2"]}
    assert fake.peers[KEY["h2"]]["allowed"] == {"100.64.0.2/32", "10.1.0.2/32"}
    assert IP("10.1.0.3") not in wg.dynamic
    tunnel.apply_mesh(controller)  # registered again
    assert fake.peers[KEY["h3"]]["allowed"] == {"100.64.0.3/32"}


def test_a_peer_provisioned_by_someone_else_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tunnel, fake = _tunnel(tmp_path, monkeypatch)
    fake.peers["other" * 8 + "AAA="] = {"allowed": {"192.0.2.9/32"}}
    tunnel.apply_mesh(_mesh("198.51.100.2:51820"))
    tunnel.apply_mesh(_mesh("198.51.100.2:51820")[:1])
    assert set(fake.peers) == {KEY["h2"], "other" * 8 + "AAA="}


def test_a_route_removed_as_via_takes_its_address_out_of_the_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a host is removed the controller no longer knows its via was a tunnel
    address and retracts the route as kind via: the allowed-ip goes all the same."""
    tunnel, fake = _tunnel(tmp_path, monkeypatch)
    tunnel.apply_mesh(_mesh("198.51.100.2:51820"))
    wg = tunnel.wg
    wg.change_routes([KernelRoute(kind="wg", dst=IP("10.1.0.3"), via=IP("100.64.0.3"))], [])
    wg.change_routes([], [KernelRoute(kind="via", dst=IP("10.1.0.3"), via=IP("100.64.0.3"))])
    assert fake.peers[KEY["h3"]]["allowed"] == {"100.64.0.3/32"}
