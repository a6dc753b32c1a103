"""GET /api/v1/trace: the verdict, what decided it, and the path the packets take
(controller/api/routes/trace.py, from controller/datapath/paths.py).  Fixtures: conftest.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.deps import ApiContext

KEY = "A" * 43 + "="



def trace(c: TestClient, **params: Any) -> dict[str, Any]:
    r = c.get("/api/v1/trace", params=params)
    assert r.status_code == 200, r.json()
    body: dict[str, Any] = r.json()
    return body


def test_trace_same_host(lab: TestClient) -> None:
    t = trace(lab, src="w1", dst="w3", proto="tcp", port=80)
    assert t == {
        "verdict": "allow", "reason": "same network web", "kind": "network", "rule_id": None,
        "port_specific": False,
        "src": {"name": "w1", "ip": "10.1.0.2", "network": "web", "host": "h1"},
        "dst": {"name": "w3", "ip": "10.1.0.4", "network": "web", "host": "h1"},
        "proto": "tcp", "port": 80, "path": ["10.1.0.4"], "path_kind": "local",
        "hops": [{"address": "10.1.0.4", "host": None, "kind": "container"}], "audit": [],
    }  # fmt: skip


def test_trace_other_host_and_by_ip(lab: TestClient) -> None:
    t = trace(lab, src="10.1.0.2", dst="w2")
    assert t["src"]["name"] == "w1"
    assert t["path"] == ["198.18.0.11", "198.18.0.12", "10.1.0.3"]
    assert (t["proto"], t["port"]) == ("tcp", None)
    w2_id = lab.get("/api/v1/containers/w2").json()["id"]
    assert trace(lab, src="w1", dst=w2_id)["dst"]["name"] == "w2"
    assert trace(lab, src="w1", dst="10.1.0.3")["dst"]["name"] == "w2"


def test_trace_denied_has_no_path(lab: TestClient) -> None:
    t = trace(lab, src="w1", dst="a1")
    assert (t["verdict"], t["kind"], t["reason"], t["path"]) == (
        "deny", "default", "default deny", []
    )
    lab.put("/api/v1/policies/w1/a1", json={"action": "allow"})
    t = trace(lab, src="w1", dst="a1", proto="icmp")
    assert (t["verdict"], t["kind"], t["reason"]) == ("allow", "pair",
                                                      "pair policy a1<->w1 (connect)")
    assert t["path"] == ["198.18.0.11", "198.18.0.12", "10.2.0.2"]


def test_trace_group_and_firewall(lab: TestClient) -> None:
    lab.post("/api/v1/groups", json={"name": "front", "networks": ["web", "api"]})
    assert trace(lab, src="a1", dst="w1")["reason"] == "group front (api, web)"
    rule = lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "deny",
        "source": {"kind": "network", "value": "api"}, "protocol": "tcp", "ports": ["22"],
    }).json()  # fmt: skip
    t = trace(lab, src="a1", dst="w1", proto="tcp", port=22)
    assert (t["verdict"], t["kind"], t["rule_id"], t["port_specific"]) == (
        "deny", "firewall", rule["id"], True
    )
    assert t["reason"] == f"firewall rule {rule['id'][:8]} #0 on network web"
    t = trace(lab, src="a1", dst="w1", proto="tcp", port=80)
    assert (t["verdict"], t["kind"], t["port_specific"]) == ("allow", "group", True)


def test_trace_from_outside(lab: TestClient) -> None:
    t = trace(lab, src="192.0.2.9", dst="w2", port=80)
    assert t["src"] == {"name": None, "ip": "192.0.2.9", "network": None, "host": None}
    assert (t["verdict"], t["reason"]) == ("deny", "default deny (not from a daolinet container)")
    lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "allow",
        "source": {"kind": "cidr", "value": "192.0.2.0/24"},
    })  # fmt: skip
    t = trace(lab, src="192.0.2.9", dst="w2", port=80)
    assert (t["verdict"], t["path"]) == ("allow", ["198.18.0.12", "10.1.0.3"])


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"src": "ghost", "dst": "w1"}, 404, "src: container ghost not found"),
        ({"src": "w1", "dst": "ghost"}, 404, "dst: container ghost not found"),
        ({"src": "w1", "dst": "192.0.2.1"}, 404, "dst: no container has address 192.0.2.1"),
        ({"dst": "w1"}, 422, "query parameter src: Field required"),
        ({"src": "w1"}, 422, "query parameter dst: Field required"),
        ({"src": "", "dst": "w1"}, 422, "query parameter src: String should have at least 1"),
        ({"src": "w1", "dst": "w2", "proto": "sctp"}, 422,
         "query parameter proto: Input should be 'tcp', 'udp' or 'icmp'"),
        ({"src": "w1", "dst": "w2", "port": 0}, 422,
         "query parameter port: Input should be greater than or equal to 1"),
        ({"src": "w1", "dst": "w2", "port": "http"}, 422,
         "query parameter port: Input should be a valid integer"),
        ({"src": "w1", "dst": "w2", "proto": "icmp", "port": 8}, 422,
         "query parameter port: icmp has no ports (got 8)"),
    ],
)
def test_trace_errors(lab: TestClient, params, status, detail) -> None:
    r = lab.get("/api/v1/trace", params=params)
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)




# --- across sites -------------------------------------------------------------------------


@pytest.fixture
def sites(lab: TestClient, ctx: ApiContext) -> TestClient:
    """h1 (site a) and h3 (site b, a relay) have WireGuard endpoints; h4 and h5 (sites c
    and d) are behind NAT; h2 (default site) has no tunnel."""
    inv = ctx.inventory

    def wg(name: str, site: str, n: int, nat: bool = False, relay: bool = False) -> None:
        inv.register_host(
            name, f"198.18.0.1{n}", site, wg_public_key=KEY, tunnel_address=f"198.19.0.{n}",
            wg_endpoint=None if nat else f"198.18.0.1{n}:51820", relay=relay,
        )  # fmt: skip

    wg("h1", "a", 1)
    wg("h3", "b", 3, relay=True)
    wg("h4", "c", 4, nat=True)
    wg("h5", "d", 5, nat=True)
    for name, host in (("x3", "h3"), ("x4", "h4"), ("x5", "h5")):
        inv.add_endpoint(name, "web", host)
    return lab


def test_trace_across_sites_shows_the_tunnel_addresses(sites: TestClient) -> None:
    x3 = sites.get("/api/v1/containers/x3").json()["ip"]
    t = trace(sites, src="w1", dst="x3")
    assert (t["verdict"], t["path_kind"]) == ("allow", "wireguard")
    assert t["path"] == ["198.19.0.1", "198.19.0.3", x3]
    assert t["hops"] == [
        {"address": "198.19.0.1", "host": "h1", "kind": "tunnel"},
        {"address": "198.19.0.3", "host": "h3", "kind": "tunnel"},
        {"address": x3, "host": None, "kind": "container"},
    ]
    # Inside a site, and to a host without a tunnel: the underlay, as before.
    t = trace(sites, src="w1", dst="w2")
    assert (t["path_kind"], t["path"]) == ("underlay", ["198.18.0.11", "198.18.0.12", "10.1.0.3"])


def test_trace_between_hosts_behind_nat_shows_the_relay(sites: TestClient) -> None:
    x5 = sites.get("/api/v1/containers/x5").json()["ip"]
    t = trace(sites, src="x4", dst="x5")
    assert (t["verdict"], t["path_kind"]) == ("allow", "relay:h3")
    assert t["path"] == ["198.19.0.4", "198.19.0.3", "198.19.0.5", x5]
    assert [(h["host"], h["kind"]) for h in t["hops"]] == [
        ("h4", "tunnel"), ("h3", "relay"), ("h5", "tunnel"), (None, "container"),
    ]
    t = trace(sites, src="192.0.2.9", dst="x5")  # denied: no path
    assert (t["verdict"], t["path"], t["path_kind"], t["hops"]) == ("deny", [], None, [])
