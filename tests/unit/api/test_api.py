"""REST API against an in-process app (FastAPI TestClient), with a fake runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi import APIRouter, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.api.app import create_app
from controller.api.auth import RequireToken, check_token
from controller.api.deps import ApiContext
from controller.api.routes import stream
from controller.cluster.leases import (
    REPLICAS,
    replica_record,
    replica_targets,
    standalone_targets,
)
from controller.desired.events import Change, EndpointAdded
from tests.unit.api.support import AUTH, ROUTES, TOKEN, FakeRuntime, extra_routers, make_ctx


@pytest.fixture
def events() -> list[Change]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, events: list[Change]):
    c = make_ctx(tmp_path / "api.db", events)
    yield c
    c.inventory.store.close()


@pytest.fixture
def client(ctx: ApiContext):
    with TestClient(create_app(ctx, extra_routers()), headers=AUTH) as c:
        yield c


@pytest.fixture
def lab(client: TestClient) -> TestClient:
    for name, address in (("h1", "198.18.0.11"), ("h2", "198.18.0.12")):
        assert (
            client.post("/api/v1/hosts", json={"name": name, "address": address}).status_code == 200
        )
    assert (
        client.post("/api/v1/networks", json={"name": "web", "subnet": "10.1.0.0/24"}).status_code
        == 201
    )
    return client


# --- auth ----------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/v1/hosts"),
    ("POST", "/api/v1/hosts"),
    ("GET", "/api/v1/hosts/h1"),
    ("GET", "/api/v1/networks"),
    ("POST", "/api/v1/networks"),
    ("GET", "/api/v1/networks/web"),
    ("DELETE", "/api/v1/networks/web"),
    ("GET", "/api/v1/containers"),
    ("POST", "/api/v1/containers"),
    ("GET", "/api/v1/containers/c1"),
    ("DELETE", "/api/v1/containers/c1"),
    ("GET", "/api/v1/routes"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid token"),
        ({"Authorization": "Bearer ünicode".encode("latin-1")}, "invalid token"),
    ],
)
def test_auth_required(ctx, method, path, headers, detail) -> None:
    with TestClient(create_app(ctx, extra_routers())) as anon:
        r = anon.request(method, path, headers=headers, json={})
    assert r.status_code == 401
    assert r.json() == {"detail": detail}
    assert r.headers["www-authenticate"] == "Bearer"


def test_bearer_scheme_is_case_insensitive(client: TestClient) -> None:
    r = client.get("/api/v1/hosts", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200


def test_healthz_and_docs_need_no_auth(ctx: ApiContext) -> None:
    with TestClient(create_app(ctx)) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        spec = anon.get("/openapi.json").json()
        assert spec["info"]["title"] == "daolinet"
        assert "/api/v1/networks" in spec["paths"]
        assert "bearer" in spec["components"]["securitySchemes"]
        assert anon.get("/docs").status_code == 200


def test_check_token(ctx: ApiContext) -> None:
    assert check_token(ctx, f"Bearer {TOKEN}")
    assert check_token(ctx, f"BEARER  {TOKEN} ")
    assert not check_token(ctx, None)
    assert not check_token(ctx, "")
    assert not check_token(ctx, TOKEN)
    assert not check_token(ctx, "Bearer nope")
    ctx.token = ""
    assert not check_token(ctx, "Bearer ")  # an empty configured token matches nothing


def test_websocket_check_token(ctx: ApiContext) -> None:
    """A stream endpoint checks the token itself (its own close code)."""
    with TestClient(create_app(ctx, extra_routers())) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with (
                pytest.raises(WebSocketDisconnect) as exc,
                anon.websocket_connect("/api/v1/hosts/h1/stream", headers=headers) as ws,
            ):
                ws.receive_json()
            assert exc.value.code == 4401
        with anon.websocket_connect("/api/v1/hosts/h1/stream", headers=AUTH) as ws:
            assert ws.receive_json()["host"] == "h1"


def test_a_follower_refuses_agent_streams(ctx: ApiContext) -> None:
    """The real stream endpoint: the only controller before it leads (runtime.master
    None) closes with 4503."""
    ctx.inventory.register_host("h1", "198.18.0.11")
    ctx.runtime = FakeRuntime(master=None)
    app = create_app(ctx, [stream.router])
    with (
        TestClient(app) as anon, pytest.raises(WebSocketDisconnect) as exc,
        anon.websocket_connect("/api/v1/hosts/h1/stream", headers=AUTH) as ws,
    ):
        ws.receive_json()
    assert (exc.value.code, exc.value.reason) == (4503, "not the leader; no leader now")


def test_require_token_works_on_websocket_routes(ctx: ApiContext) -> None:
    router = APIRouter(dependencies=[RequireToken])

    @router.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"ok": True})
        await websocket.close()

    with TestClient(create_app(ctx, [router])) as anon:
        with (
            pytest.raises(WebSocketDisconnect) as exc,
            anon.websocket_connect("/api/v1/echo", headers={"Authorization": "Bearer x"}) as ws,
        ):
            ws.receive_json()
        assert exc.value.code == 1008
        with anon.websocket_connect("/api/v1/echo", headers=AUTH) as ws:
            assert ws.receive_json() == {"ok": True}


# --- hosts ---------------------------------------------------------------------------


def test_register_host(client: TestClient, events: list[Change]) -> None:
    r = client.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "h1"
    assert body["address"] == "198.18.0.11"
    assert body["site"] == "default"
    assert body["dpid"] == 1
    assert "registered_at" in body
    # wildcard listen address: the address the client used (TestClient: "testserver")
    assert body["openflow_targets"] == ["tcp:testserver:6653"]
    again = client.post(
        "/api/v1/hosts", json={"name": "h1", "address": "198.18.0.21", "site": "east"}
    ).json()
    assert (again["dpid"], again["address"], again["site"]) == (1, "198.18.0.21", "east")
    assert (
        client.post("/api/v1/hosts", json={"name": "h2", "address": "198.18.0.12"}).json()["dpid"]
        == 2
    )
    assert [h["name"] for h in client.get("/api/v1/hosts").json()] == ["h1", "h2"]
    assert client.get("/api/v1/hosts/h2").json()["dpid"] == 2
    assert len(events) == 3


@pytest.mark.parametrize(
    ("base_url", "openflow_host", "target"),
    [
        ("http://198.18.0.1:8080", "0.0.0.0", "tcp:198.18.0.1:6653"),
        ("http://198.18.0.1:8080", "", "tcp:198.18.0.1:6653"),
        ("http://[fd00::1]:8080", "::", "tcp:[fd00::1]:6653"),
        ("http://198.18.0.1:8080", "198.18.0.99", "tcp:198.18.0.99:6653"),
    ],
)
def test_openflow_targets(tmp_path, base_url, openflow_host, target) -> None:
    ctx = make_ctx(tmp_path / "t.db", [], openflow_host=openflow_host)
    with TestClient(create_app(ctx), base_url=base_url, headers=AUTH) as c:
        r = c.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"})
    assert r.json()["openflow_targets"] == [target]
    ctx.inventory.store.close()


def test_openflow_targets_with_tls_are_ssl(tmp_path: Path) -> None:
    ctx = dataclasses.replace(make_ctx(tmp_path / "t.db", []), openflow_scheme="ssl")
    with TestClient(create_app(ctx), base_url="http://198.18.0.1:8080", headers=AUTH) as c:
        r = c.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"})
    assert r.json()["openflow_targets"] == ["ssl:198.18.0.1:6653"]
    ctx.inventory.store.close()


def test_openflow_targets_per_site(tmp_path: Path) -> None:
    """Replicated controllers: a switch of a replica's site gets its underlay target,
    a switch of another site its remote (WireGuard) one; a replica without a site
    gives its one target to every switch."""
    ctx = make_ctx(tmp_path / "t.db", [])
    store = ctx.inventory.store
    records = [
        replica_record("c0", "http://198.18.0.1:8080", "tcp:198.18.0.1:6653", site="a",
                       openflow_remote="tcp:198.19.0.1:6653"),
        replica_record("c1", "http://198.18.0.2:8080", "tcp:198.18.0.2:6653", site="a",
                       openflow_remote="tcp:198.19.0.2:6653"),
        replica_record("c2", "http://198.18.0.3:8080", "tcp:198.18.0.3:6653"),
        replica_record("c3", "http://198.18.1.4:8080", "tcp:198.18.1.4:6653", site="b",
                       openflow_remote="tcp:198.19.0.4:6653"),
        # a record from before openflow_remote, with a site: its one target
        {"name": "c4", "api": "http://198.18.0.5:8080", "openflow": "tcp:198.18.0.5:6653",
         "site": "a"},
        # the remote default: the same target for every site
        replica_record("c5", "http://198.18.0.6:8080", "tcp:198.18.0.6:6653", site="a"),
    ]
    for record in records:
        store.put(REPLICAS, str(record["name"]), record)
    ctx.openflow_targets = lambda site: replica_targets(store, site)
    expected = {
        "a": ["tcp:198.18.0.1:6653", "tcp:198.18.0.2:6653", "tcp:198.18.0.3:6653",
              "tcp:198.18.0.5:6653", "tcp:198.18.0.6:6653", "tcp:198.19.0.4:6653"],
        "b": ["tcp:198.18.0.3:6653", "tcp:198.18.0.5:6653", "tcp:198.18.0.6:6653",
              "tcp:198.18.1.4:6653", "tcp:198.19.0.1:6653", "tcp:198.19.0.2:6653"],
        "c": ["tcp:198.18.0.3:6653", "tcp:198.18.0.5:6653", "tcp:198.18.0.6:6653",
              "tcp:198.19.0.1:6653", "tcp:198.19.0.2:6653", "tcp:198.19.0.4:6653"],
    }
    with TestClient(create_app(ctx), headers=AUTH) as c:
        for i, site in enumerate(expected):
            r = c.post("/api/v1/hosts", json={"name": f"h{site}", "address": f"198.18.2.{i + 1}",
                                              "site": site})
            assert r.status_code == 200, r.text
            assert r.json()["openflow_targets"] == expected[site], site
        listed = {h["name"]: h["openflow_targets"] for h in c.get("/api/v1/hosts").json()}
        assert listed == {f"h{site}": targets for site, targets in expected.items()}
    store.close()


def test_openflow_targets_of_a_standalone_controller_with_a_site(tmp_path: Path) -> None:
    """SQLite, --site a --advertise-openflow-remote: a switch of site a gets the target
    derived from the address its agent used, one of another site the remote one."""
    ctx = make_ctx(tmp_path / "t.db", [])
    ctx.openflow_targets = standalone_targets("a", "tcp:198.19.0.1:6653")
    with TestClient(create_app(ctx), base_url="http://198.18.0.1:8080", headers=AUTH) as c:
        near = c.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11",
                                             "site": "a"}).json()
        far = c.post("/api/v1/hosts", json={"name": "h2", "address": "198.18.1.11",
                                            "site": "b"}).json()
    assert near["openflow_targets"] == ["tcp:198.18.0.1:6653"]
    assert far["openflow_targets"] == ["tcp:198.19.0.1:6653"]
    assert standalone_targets("a", None) is None
    assert standalone_targets(None, None) is None
    ctx.inventory.store.close()


def test_unknown_host_404(client: TestClient) -> None:
    r = client.get("/api/v1/hosts/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "host nope not found"}


# --- networks ------------------------------------------------------------------------


def test_network_crud(client: TestClient) -> None:
    r = client.post(
        "/api/v1/networks",
        json={"name": "web", "subnet": "10.1.0.0/24", "gateway": "10.1.0.254", "mtu": 1400},
    )
    assert r.status_code == 201
    net = r.json()
    assert (net["subnet"], net["gateway"], net["mtu"]) == ("10.1.0.0/24", "10.1.0.254", 1400)
    assert set(net) == {
        "id", "name", "subnet", "gateway", "mtu", "external", "internal", "reserved", "labels",
        "created_at",
    }
    assert net["external"] is False
    assert client.get("/api/v1/networks/web").json() == net
    client.post("/api/v1/networks", json={"name": "db", "subnet": "10.2.0.0/16"})
    assert [n["name"] for n in client.get("/api/v1/networks").json()] == ["db", "web"]
    r = client.delete("/api/v1/networks/web")
    assert r.status_code == 200
    assert r.json() == net
    assert client.get("/api/v1/networks/web").status_code == 404
    assert [n["name"] for n in client.get("/api/v1/networks").json()] == ["db"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"name": "x", "subnet": "10.1.0.0/16"},
            409,
            "subnet 10.1.0.0/16 overlaps network web (10.1.0.0/24)",
        ),
        ({"name": "web", "subnet": "10.9.0.0/24"}, 409, "network web already exists"),
        (
            {"name": "x", "subnet": "10.9.0.1/24"},
            422,
            "subnet 10.9.0.1/24 has host bits set (did you mean 10.9.0.0/24?)",
        ),
        ({"name": "x", "subnet": "10.9.0.0/31"}, 422, "subnet 10.9.0.0/31 leaves no room"),
        ({"name": "x", "subnet": "nope"}, 422, "subnet 'nope' is not an IPv4 CIDR"),
        (
            {"name": "x", "subnet": "10.9.0.0/24", "gateway": "10.8.0.1"},
            422,
            "gateway 10.8.0.1 is outside subnet 10.9.0.0/24",
        ),
        (
            {"name": "x", "subnet": "10.9.0.0/24", "mtu": 100},
            422,
            "mtu: Input should be greater than or equal to 576",
        ),
        (
            {"name": "x", "subnet": "10.9.0.0/24", "mtu": "big"},
            422,
            "mtu: Input should be a valid integer",
        ),
        ({"name": "x"}, 422, "subnet: Field required"),
        ({"subnet": "10.9.0.0/24"}, 422, "name: Field required"),
        ({"name": "bad name", "subnet": "10.9.0.0/24"}, 422, "name: String should match pattern"),
        (
            {"name": "x", "subnet": "10.9.0.0/24", "color": "red"},
            422,
            "color: Extra inputs are not permitted",
        ),
        ({"name": "x", "subnet": 10}, 422, "subnet: Input should be a valid string"),
    ],
)
def test_network_errors(lab, body, status, detail) -> None:
    r = lab.post("/api/v1/networks", json=body)
    assert r.status_code == status
    assert isinstance(r.json()["detail"], str)
    assert r.json()["detail"].startswith(detail)


def test_delete_network_in_use(lab: TestClient) -> None:
    lab.post("/api/v1/containers", json={"name": "c1", "network": "web", "host": "h1"})
    r = lab.delete("/api/v1/networks/web")
    assert r.status_code == 409
    assert r.json() == {"detail": "network web still has 1 container(s): c1"}
    assert lab.delete("/api/v1/networks/nope").json() == {"detail": "network nope not found"}


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post(
        "/api/v1/networks", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("request body is not valid JSON")


def test_missing_body_is_422(client: TestClient) -> None:
    r = client.post("/api/v1/networks")
    assert r.status_code == 422
    assert r.json()["detail"] == "request body is required"


# --- containers ----------------------------------------------------------------------


def test_container_crud(lab: TestClient, events: list[Change]) -> None:
    r = lab.post("/api/v1/containers", json={"name": "c1", "network": "web", "host": "h1"})
    assert r.status_code == 201
    ep = r.json()
    assert set(ep) == {
        "id", "name", "network", "host", "ip", "mac", "port", "created_at",
        "prefixlen", "gateway", "mtu", "docker_id", "aliases", "hostname",
    }  # fmt: skip
    assert (ep["ip"], ep["mac"], ep["prefixlen"], ep["gateway"], ep["mtu"]) == (
        "10.1.0.2",
        "02:da:0a:01:00:02",
        24,
        "10.1.0.1",
        1500,
    )
    assert ep["port"] == "dl" + ep["id"][:12]
    assert isinstance(events[-1], EndpointAdded)
    r2 = lab.post(
        "/api/v1/containers",
        json={
            "name": "c2",
            "network": "web",
            "host": "h2",
            "ip": "10.1.0.50",
            "mac": "02:00:00:00:00:50",
        },
    )
    assert r2.status_code == 201
    assert (r2.json()["ip"], r2.json()["mac"]) == ("10.1.0.50", "02:00:00:00:00:50")
    assert lab.get(f"/api/v1/containers/{ep['id']}").json() == ep
    assert lab.get("/api/v1/containers/c1").json() == ep
    assert [e["name"] for e in lab.get("/api/v1/containers").json()] == ["c1", "c2"]
    assert [e["name"] for e in lab.get("/api/v1/containers", params={"host": "h2"}).json()] == [
        "c2"
    ]
    assert lab.get("/api/v1/containers", params={"host": "nobody"}).json() == []
    r = lab.delete("/api/v1/containers/c1")
    assert r.status_code == 200
    assert r.json() == ep
    assert lab.get("/api/v1/containers/c1").status_code == 404
    # the address is reused
    assert (
        lab.post("/api/v1/containers", json={"name": "c3", "network": "web", "host": "h1"}).json()[
            "ip"
        ]
        == "10.1.0.2"
    )


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"network": "nope"}, 404, "network nope not found"),
        ({"host": "nope"}, 404, "host nope not found"),
        ({"name": "taken"}, 409, "container taken already exists"),
        ({"ip": "10.1.0.2"}, 409, "ip 10.1.0.2 is already used by container taken"),
        ({"ip": "10.2.0.2"}, 422, "ip 10.2.0.2 is outside subnet 10.1.0.0/24 of network web"),
        ({"ip": "10.1.0.1"}, 422, "ip 10.1.0.1 is the gateway of network web"),
        ({"ip": "10.1.0.255"}, 422, "ip 10.1.0.255 is the broadcast address"),
        ({"ip": "x"}, 422, "ip 'x' is not an IPv4 address"),
        (
            {"mac": "02:da:0a:01:00:02"},
            409,
            "mac 02:da:0a:01:00:02 is already used by container taken",
        ),
        ({"mac": "nope"}, 422, "mac 'nope' is not a MAC address"),
        ({"name": None}, 422, "name: Input should be a valid string"),
        ({"network": ""}, 422, "network: String should have at least 1 character"),
    ],
)
def test_container_errors(lab, body, status, detail) -> None:
    lab.post("/api/v1/containers", json={"name": "taken", "network": "web", "host": "h1"})
    r = lab.post("/api/v1/containers", json={"name": "new", "network": "web", "host": "h1"} | body)
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)


def test_container_not_found(lab: TestClient) -> None:
    for method in ("GET", "DELETE"):
        r = lab.request(method, "/api/v1/containers/ghost")
        assert r.status_code == 404
        assert r.json() == {"detail": "container ghost not found"}


def test_host_errors(client: TestClient) -> None:
    r = client.post("/api/v1/hosts", json={"name": "h1", "address": "not-an-ip"})
    assert (r.status_code, r.json()["detail"]) == (
        422,
        "address 'not-an-ip' is not an IPv4 address",
    )
    r = client.post("/api/v1/hosts", json={"name": "h1"})
    assert (r.status_code, r.json()["detail"]) == (422, "address: Field required")
    client.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"})
    r = client.post("/api/v1/hosts", json={"name": "h2", "address": "198.18.0.11"})
    assert (r.status_code, r.json()["detail"]) == (
        409,
        "address 198.18.0.11 is already registered by host h1",
    )


# --- routes (extra router) -----------------------------------------------------------


def test_routes_from_runtime(client: TestClient) -> None:
    assert client.get("/api/v1/routes").json() == ROUTES
    assert client.get("/api/v1/routes", params={"host": "h1"}).json() == ROUTES[:1]


def test_state_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    ctx = make_ctx(db, [])
    with TestClient(create_app(ctx), headers=AUTH) as c:
        c.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"})
        c.post("/api/v1/networks", json={"name": "web", "subnet": "10.1.0.0/24"})
        ep = c.post(
            "/api/v1/containers", json={"name": "c1", "network": "web", "host": "h1"}
        ).json()
    ctx.inventory.store.close()
    ctx2 = make_ctx(db, [])
    with TestClient(create_app(ctx2), headers=AUTH) as c:
        assert c.get("/api/v1/containers/c1").json() == ep
        assert (
            c.post("/api/v1/hosts", json={"name": "h1", "address": "198.18.0.11"}).json()["dpid"]
            == 1
        )
    ctx2.inventory.store.close()
