"""GET /api/v1/connections (controller/api/routes/live.py, controller/api/connections.py):
the connection log through the API, its filters, pages and refusals, and the merge
of another replica's log."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.connections import ConnectionQuery, merge_pages
from controller.api.deps import ApiContext
from controller.api.routes import exports, live
from controller.cluster.roles import Roles
from controller.connlog.log import MAX_PAGE, ConnectionLog
from controller.datapath.connections import ConnEvent
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from tests.unit.api.support import ADMIN, AGENT, READONLY, bearer
from tests.unit.apiserver import serve

IP = ipaddress.IPv4Address


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(event: str, src: str, dst: str, dport: int, rule: str | None = None) -> ConnEvent:
    denied = event == "denied"
    return ConnEvent(
        event, IP("10.1.0.5"), IP("10.1.0.6"), 6, 40000, dport,  # type: ignore[arg-type]
        (src, "web", "h1", "default"), (dst, "db", "h2", "default"),
        "deny" if denied else "allow", "firewall rule" if rule else "same network web",
        "firewall" if rule else "network", rule, None if denied else "underlay", "h1",
    )


def make_ctx(tmp_path: Path, connlog: ConnectionLog | None, name: str = "c0",
             roles: Roles | None = None) -> ApiContext:
    inventory = Inventory(SqliteStore(tmp_path / f"{name}.db"), lambda change: None)
    roles = roles or Roles()
    return ApiContext(
        inventory=inventory, token=ADMIN, readonly_token=READONLY, agent_token=AGENT,
        runtime=DatapathRuntime(inventory.index, roles), openflow_host="0.0.0.0",
        openflow_port=6653, roles=roles, connlog=connlog, replica={"name": name},
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def connlog(clock: Clock) -> ConnectionLog:
    log = ConnectionLog(clock=clock)
    log.record([ev("allowed", "a", "b", 80), ev("denied", "a", "d", 22, rule="ab12cd")])
    clock.now += 60
    log.record([ev("expired", "x", "b", 443)])
    return log


@pytest.fixture
def client(tmp_path: Path, connlog: ConnectionLog) -> Iterator[TestClient]:
    ctx = make_ctx(tmp_path, connlog)
    with TestClient(create_app(ctx, [live.router, exports.router]),
                    headers=bearer(READONLY)) as c:
        yield c
    ctx.inventory.store.close()


def get(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/connections", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_read_only_token_reads_the_log_with_both_identities(client: TestClient) -> None:
    body = get(client)
    assert [e["event"] for e in body["entries"]] == ["allowed", "denied", "expired"]
    first = body["entries"][0]
    assert first["src"] == {"container": "a", "network": "web", "host": "h1",
                            "site": "default", "ip": "10.1.0.5", "port": 40000}
    assert (first["dst"]["container"], first["proto"], first["path"], first["replica"]) == (
        "b", "tcp", "underlay", "c0")
    assert body["more"] is False and body["next_before"] is None
    assert body["next_after"] == body["entries"][-1]["time"]


def test_no_token_no_log(client: TestClient) -> None:
    r = client.get("/api/v1/connections", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_filters(client: TestClient, clock: Clock) -> None:
    def events(**params: Any) -> list[str]:
        return [e["event"] for e in get(client, **params)["entries"]]

    assert events(container="x") == ["expired"]
    assert events(verdict="deny") == ["denied"]
    assert events(rule="ab12") == ["denied"]
    assert events(kind="network", event="allowed") == ["allowed"]
    assert events(network="db", host="h2") == ["allowed", "denied", "expired"]
    assert events(since=clock.now - 30) == ["expired"]
    assert events(until="2027-01-15T08:00:30Z") == ["allowed", "denied"]  # t0 is 08:00:00
    assert events(container="nobody") == []


def test_pages_back_and_forward(client: TestClient, connlog: ConnectionLog) -> None:
    page = get(client, limit=2)
    assert [e["event"] for e in page["entries"]] == ["denied", "expired"] and page["more"]
    back = get(client, limit=2, before=page["next_before"])
    assert [e["event"] for e in back["entries"]] == ["allowed"] and not back["more"]
    connlog.record([ev("allowed", "n", "b", 8080)])
    new = get(client, after=page["next_after"])
    assert [e["dst"]["port"] for e in new["entries"]] == [8080]
    assert get(client, after=new["next_after"])["entries"] == []


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": MAX_PAGE + 1}, "query parameter limit"),
    ({"limit": 0}, "query parameter limit"),
    ({"verdict": "maybe"}, "query parameter verdict"),
    ({"container": "x" * 300}, "query parameter container"),
    ({"since": "yesterday"}, "query parameter since"),
    ({"sort": "time"}, "query parameter sort"),
])
def test_bad_queries_are_refused_naming_the_field(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    r = client.get("/api/v1/connections", params=params)
    assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text


def test_the_largest_page_is_served(client: TestClient, connlog: ConnectionLog) -> None:
    connlog.record([ev("allowed", "a", "b", p) for p in range(1, MAX_PAGE + 10)])
    body = get(client, limit=MAX_PAGE)
    assert len(body["entries"]) == MAX_PAGE and body["more"]


def test_a_replica_without_the_log_says_so(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, None)
    with TestClient(create_app(ctx, [live.router]), headers=bearer(ADMIN)) as c:
        r = c.get("/api/v1/connections")
    assert r.status_code == 404 and "--connection-log-entries 0" in r.json()["detail"]


class Members:
    """What ApiContext.member_apis reads of Masters: the other members' API URLs."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def member_apis(self) -> list[str]:
        return self.urls


def test_any_replica_answers_for_all(tmp_path: Path, clock: Clock) -> None:
    """c0 serves its own entries and c1's (asked at /replicas/connections with the
    admin token), merged by time; the filters and the page size apply to both."""
    roles1 = Roles("c1")
    roles1.set_membership(True)
    roles1.set_assignment({1: "c0", 2: "c1"}, 3)
    log0, log1 = ConnectionLog(clock=clock), ConnectionLog(clock=clock)
    log0.record([ev("allowed", "a", "b", 1)])
    clock.now += 1
    log1.record([ev("denied", "c", "d", 2)])
    clock.now += 1
    log0.record([ev("expired", "a", "b", 3)])
    ctx1 = make_ctx(tmp_path, log1, "c1", roles1)
    ctx0 = make_ctx(tmp_path, log0, "c0")
    with serve(ctx1, [exports.router]) as url1:
        ctx0.masters = Members([url1])  # type: ignore[assignment]
        with TestClient(create_app(ctx0, [live.router]), headers=bearer(READONLY)) as c:
            body = c.get("/api/v1/connections").json()
            assert [(e["replica"], e["dst"]["port"]) for e in body["entries"]] == [
                ("c0", 1), ("c1", 2), ("c0", 3)]
            two = c.get("/api/v1/connections", params={"limit": 2}).json()
            assert [e["dst"]["port"] for e in two["entries"]] == [2, 3] and two["more"]
            denied = c.get("/api/v1/connections", params={"verdict": "deny"}).json()
            assert [e["replica"] for e in denied["entries"]] == ["c1"]
    # the member is gone: the answer says which one did not answer
    with TestClient(create_app(ctx0, [live.router]), headers=bearer(READONLY)) as c:
        r = c.get("/api/v1/connections")
    assert r.status_code == 503 and url1 in r.json()["detail"]


def test_the_member_route_answers_only_with_masters_spread(client: TestClient) -> None:
    for token in (READONLY, ADMIN):
        r = client.get("/api/v1/replicas/connections", headers=bearer(token))
        assert r.status_code == 404 and "not spread" in r.json()["detail"]
    r = client.get("/api/v1/replicas/connections", headers=bearer("wrong"))
    assert r.status_code == 401


def test_merged_pages_keep_the_newest_or_follow_the_oldest() -> None:
    def part(*times: float, more: bool = False) -> dict[str, Any]:
        return {"entries": [{"time": t} for t in times], "more": more}

    q = ConnectionQuery(limit=3)
    merged = merge_pages([part(1.0, 4.0, 5.0), part(2.0, 3.0)], q)
    assert [e["time"] for e in merged["entries"]] == [3.0, 4.0, 5.0]
    assert merged["more"] and merged["next_before"] == 3.0 and merged["next_after"] == 5.0
    q = ConnectionQuery(limit=3, after=0.5)
    merged = merge_pages([part(1.0, 4.0, 5.0), part(2.0, 3.0)], q)
    assert [e["time"] for e in merged["entries"]] == [1.0, 2.0, 3.0]
    assert merged["more"] and merged["next_before"] is None and merged["next_after"] == 3.0
