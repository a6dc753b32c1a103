"""Each bad input of issue 17 through the REST API: a 4xx whose detail names the
field, nothing written; the ordinary values beside them still accepted
(docs/security.md, "Validation")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.desired.events import Change
from tests.unit.api.support import AUTH, extra_routers, make_ctx

KEY = "k" * 42 + "A="


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ApiContext]:
    events: list[Change] = []
    c = make_ctx(tmp_path / "api.db", events)
    yield c
    c.inventory.store.close()


@pytest.fixture
def api(ctx: ApiContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx, extra_routers()), headers=AUTH) as c:
        for name, address, tunnel in (("h1", "198.18.0.11", "100.64.0.1"),
                                      ("h2", "198.18.0.12", "100.64.0.2")):
            r = c.post("/api/v1/hosts", json={
                "name": name, "address": address, "site": name, "wg_public_key": KEY,
                "wg_endpoint": f"{address}:51820", "tunnel_address": tunnel})
            assert r.status_code == 200, r.text
        r = c.post("/api/v1/networks", json={"name": "web", "subnet": "10.1.0.0/24"})
        assert r.status_code == 201, r.text
        yield c


@pytest.mark.parametrize(
    ("subnet", "status", "detail"),
    [
        ("0.0.0.0/0", 422, "subnet 0.0.0.0/0 is too large: use /8 or smaller"),
        ("127.0.0.0/8", 422, "subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8"),
        ("224.0.0.0/4", 422, "subnet 224.0.0.0/4 is too large: use /8 or smaller"),
        ("224.1.0.0/16", 422, "subnet 224.1.0.0/16 overlaps the multicast range 224.0.0.0/4"),
        ("169.254.0.0/16", 422,
         "subnet 169.254.0.0/16 overlaps the link-local range 169.254.0.0/16"),
        ("240.0.0.0/8", 422,
         "subnet 240.0.0.0/8 overlaps the reserved and broadcast range 240.0.0.0/4"),
        ("0.0.0.0/8", 422, "subnet 0.0.0.0/8 overlaps the 'this network' range 0.0.0.0/8"),
        ("198.18.0.0/24", 409, "subnet 198.18.0.0/24 holds 198.18.0.11, the address of host h1"),
        ("100.64.0.0/24", 409,
         "subnet 100.64.0.0/24 holds 100.64.0.1, the tunnel address of host h1"),
    ],
)
def test_bad_subnets(api: TestClient, subnet: str, status: int, detail: str) -> None:
    r = api.post("/api/v1/networks", json={"name": "x", "subnet": subnet})
    assert (r.status_code, r.json()["detail"]) == (status, detail)
    assert api.get("/api/v1/networks/x").status_code == 404


@pytest.mark.parametrize("subnet", ["10.20.0.0/16", "192.168.5.0/24", "172.16.0.0/12",
                                    "10.128.0.0/9", "100.65.0.0/16", "203.0.113.0/30"])
def test_subnets_users_use(api: TestClient, subnet: str) -> None:
    r = api.post("/api/v1/networks", json={"name": "x", "subnet": subnet})
    assert (r.status_code, r.json()["subnet"]) == (201, subnet)


@pytest.mark.parametrize(
    ("ip", "status", "detail"),
    [
        ("127.0.0.1", 422, "ip 127.0.0.1 is in the loopback range 127.0.0.0/8"),
        ("224.0.0.1", 422, "ip 224.0.0.1 is in the multicast range 224.0.0.0/4"),
        ("198.18.0.12", 422, "ip 198.18.0.12 is outside subnet 10.1.0.0/24 of network web"),
        ("10.1.0.0", 422, "ip 10.1.0.0 is the network address of subnet 10.1.0.0/24"),
        ("10.1.0.255", 422, "ip 10.1.0.255 is the broadcast address of subnet 10.1.0.0/24"),
        ("10.1.0.1", 422, "ip 10.1.0.1 is the gateway of network web"),
    ],
)
def test_bad_container_ips(api: TestClient, ip: str, status: int, detail: str) -> None:
    r = api.post("/api/v1/containers", json={"name": "c1", "network": "web", "host": "h1",
                                             "ip": ip})
    assert (r.status_code, r.json()["detail"]) == (status, detail)
    r = api.post("/api/v1/containers", json={"name": "c1", "network": "web", "host": "h1",
                                             "ip": "10.1.0.254"})
    assert (r.status_code, r.json()["ip"]) == (201, "10.1.0.254")


@pytest.mark.parametrize(
    "endpoint",
    ["1.2.3.4:5_1820", "1.2.3.4:+51820", "1.2.3.4:\u0665\u0661\u0668\u0662\u0660",
     "1.2.3.4:\uff10", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4", "example.org:51820",
     "1.2.3.4:51820 x"],
)
def test_bad_wireguard_endpoints(api: TestClient, endpoint: str) -> None:
    r = api.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11",
                                        "wg_public_key": KEY, "wg_endpoint": endpoint})
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"wg_endpoint {endpoint!r} is not IPv4:PORT")
    assert api.get("/api/v1/hosts/h1").json()["wg_endpoint"] == "198.18.0.11:51820"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"address": "224.0.0.1"}, 422, "address 224.0.0.1 is in the multicast range"),
        ({"address": "255.255.255.255"}, 422,
         "address 255.255.255.255 is in the reserved and broadcast range"),
        ({"address": "10.1.0.9"}, 409, "address 10.1.0.9 is inside subnet 10.1.0.0/24"),
        ({"address": "100.64.0.1"}, 409, "address 100.64.0.1 is the tunnel address of host h1"),
        ({"tunnel_address": "0.0.0.0"}, 422, "tunnel_address 0.0.0.0 is in the 'this network'"),
        ({"tunnel_address": "10.1.0.9"}, 409, "tunnel_address 10.1.0.9 is inside subnet"),
        ({"wg_endpoint": "224.0.0.1:51820"}, 422, "wg_endpoint 224.0.0.1 is in the multicast"),
    ],
)
def test_bad_host_addresses(api: TestClient, body: dict[str, str], status: int,
                            detail: str) -> None:
    r = api.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.0.13",
                                        "wg_public_key": KEY, **body})
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)
    assert api.get("/api/v1/hosts/h3").status_code == 404


def test_good_host_registers(api: TestClient) -> None:
    r = api.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.0.13", "site": "c",
                                        "wg_public_key": KEY, "wg_endpoint": "203.0.113.9:1",
                                        "tunnel_address": "100.64.0.3"})
    assert r.status_code == 200
    assert (r.json()["wg_endpoint"], r.json()["tunnel_address"]) == ("203.0.113.9:1",
                                                                     "100.64.0.3")


@pytest.mark.parametrize("port", ["\u0668\u0660", "+80", "8_0"])
def test_firewall_ports_in_other_digits(api: TestClient, port: str) -> None:
    r = api.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "allow", "protocol": "tcp",
        "ports": [port]})
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"ports entry {port!r} is not a port or a range")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"aliases": ["a b"]}, "aliases"),
        ({"aliases": ["x" * 64]}, "aliases"),
        ({"aliases": [f"a{n}" for n in range(17)]}, "aliases"),
        ({"aliases": "api"}, "aliases"),
        ({"hostname": "-box"}, "hostname"),
        ({"hostname": "b" * 254}, "hostname"),
    ],
)
def test_bad_aliases_and_hostnames_are_refused_naming_the_field(
    api: TestClient, body: dict[str, object], field: str
) -> None:
    assert api.post("/api/v1/containers", json={
        "name": "w1", "network": "web", "host": "h1"}).status_code == 201
    r = api.patch("/api/v1/containers/w1", json=body)
    assert r.status_code == 422 and field in r.text, r.text
    assert api.get("/api/v1/containers/w1").json()["aliases"] == []


def test_aliases_and_hostname_are_recorded(api: TestClient) -> None:
    assert api.post("/api/v1/containers", json={
        "name": "w1", "network": "web", "host": "h1"}).status_code == 201
    r = api.patch("/api/v1/containers/w1", json={"aliases": ["api", "www.example.test"],
                                                 "hostname": "box1"})
    assert r.status_code == 200, r.text
    assert (r.json()["aliases"], r.json()["hostname"]) == (["api", "www.example.test"], "box1")
    r = api.patch("/api/v1/containers/w1", json={"hostname": ""})
    assert r.json()["hostname"] is None and r.json()["aliases"] == ["api", "www.example.test"]
