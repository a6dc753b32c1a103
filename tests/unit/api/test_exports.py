"""Requests between replicas with masters spread over them (controller/api/routes/exports.py)
and the merge of their live routes (controller/api/routes/live.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.routes import exports
from controller.api.routes import live as routes
from controller.api.routes.live import merge_routes
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.sqlite import SqliteStore

ADMIN = "admin-token-for-the-export-tests"


def half(flows: int, age: float, idle: float) -> dict[str, object]:
    return {"src": "a", "src_ip": "10.1.0.5", "dst": "b", "dst_ip": "10.1.0.6",
            "src_host": "h1", "dst_host": "h2", "path": "underlay", "mode": "open",
            "flows": flows, "age": age, "idle": idle}


def test_the_two_halves_of_a_connection_are_one_row() -> None:
    other = dict(half(2, 0.1, 0.1), src="c", src_ip="10.1.0.7", dst_ip="10.1.0.8")
    merged = merge_routes([[half(2, 5.0, 0.5)], [half(2, 4.0, 0.2), other]])
    assert merged == [half(4, 5.0, 0.2), other]


def spread_app(tmp_path: Path, me: str | None) -> tuple[TestClient, DatapathRuntime]:
    """An app of replica `me` (None: the one master of all), member, h1 assigned to c0
    and h2 to c1."""
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    for name, dpid in (("h1", 1), ("h2", 2)):
        inventory.index.put_host(Host(name=name, address=ipaddress.IPv4Address(
            f"198.18.0.{dpid}"), dpid=dpid))
    roles = Roles(me)
    runtime = DatapathRuntime(inventory.index, roles)
    roles.set_membership(True)
    roles.set_assignment({1: "c0", 2: "c1"}, 7)
    ctx = ApiContext(inventory=inventory, token=ADMIN, runtime=runtime,
                     openflow_host="0.0.0.0", openflow_port=6653, roles=roles)
    app = create_app(ctx, [exports.router, routes.router])
    return TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}), runtime


NEEDS = {"sender": "c1", "generation": 7, "token": 3, "needs": {"2": {"10.1.0.6": "198.19.0.2"}}}


def test_needs_for_a_host_we_do_not_master_are_refused(tmp_path: Path) -> None:
    client, runtime = spread_app(tmp_path, "c0")
    assert runtime.serves("h1") and not runtime.serves("h2")
    assert runtime.core.state.foreign == {"h2"}
    r = client.post("/api/v1/replicas/needs", json=dict(NEEDS, host="h2"))
    assert r.status_code == 409 and "does not master host h2" in r.json()["detail"]
    # ours, but its switch has not connected (no dump yet): kept, answered not ok
    r = client.post("/api/v1/replicas/needs", json=dict(NEEDS, host="h1"))
    assert r.status_code == 200 and r.json() == {"ok": False}
    table = runtime.core.state.imports["h1"].sets[2]
    assert (table.generation, table.token) == (7, 3)
    assert table.needs == {ipaddress.IPv4Address("10.1.0.6"): ipaddress.IPv4Address("198.19.0.2")}
    r = client.post("/api/v1/replicas/needs", json=dict(NEEDS, host="h1", needs={"x": {}}))
    assert r.status_code == 422


def test_export_sizes_are_bounded_naming_the_field(tmp_path: Path) -> None:
    client, runtime = spread_app(tmp_path, "c0")
    many = {str(d): {} for d in range(exports.MAX_SWITCHES + 1)}
    r = client.post("/api/v1/replicas/needs", json=dict(NEEDS, host="h1", needs=many))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("needs: Dictionary should have at most 4096 items")
    assert "h1" not in runtime.core.state.imports
    args = {f"a{i}": i for i in range(exports.MAX_ARGS + 1)}
    r = client.post("/api/v1/replicas/agent-command", json={"host": "h1", "op": "x", "args": args})
    assert r.status_code == 422 and r.json()["detail"].startswith("args: Dictionary should have")
    # at the bound: taken (refused only because h1's agent is not connected here)
    r = client.post("/api/v1/replicas/agent-command",
                    json={"host": "h1", "op": "x", "args": dict(list(args.items())[:-1])})
    assert r.status_code == 409, r.text


def test_without_membership_nothing_is_ours(tmp_path: Path) -> None:
    client, runtime = spread_app(tmp_path, "c0")
    runtime.roles.set_membership(False)
    assert not runtime.serves("h1") and runtime.core.state.foreign == {"h1", "h2"}
    r = client.post("/api/v1/replicas/agent-command",
                    json={"host": "h1", "op": "wg-keygen"})
    assert r.status_code == 409


def test_the_one_master_of_all_has_no_export_requests(tmp_path: Path) -> None:
    client, _ = spread_app(tmp_path, None)
    for method, path, body in (("POST", "/api/v1/replicas/needs", dict(NEEDS, host="h1")),
                               ("POST", "/api/v1/replicas/agent-command",
                                {"host": "h1", "op": "x"})):
        r = client.request(method, path, json=body)
        assert r.status_code == 404 and "not spread" in r.json()["detail"], r.text
    assert client.get("/api/v1/replicas/routes").status_code == 404
    assert client.get("/api/v1/replicas/needs").status_code == 405
    # an agent token or none may not talk as a replica
    r = client.post("/api/v1/replicas/needs", json=dict(NEEDS, host="h1"),
                    headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
