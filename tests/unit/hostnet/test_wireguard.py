"""The agent's WireGuard inputs (docs/security.md, "Validation"): a bad endpoint in
the provisioning file stops the start with the field named; a bad endpoint from the
controller's mesh or the file's host list never reaches `wg set` (it would resolve it as
a name on the route thread), while good peers are set as before."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from controller.datapath.sites import PeerSpec
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
