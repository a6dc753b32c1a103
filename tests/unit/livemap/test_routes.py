"""The live map's page and API (controller/livemap/routes.py) against the API test
server: who may read them (no credential: refused; the read-only token: enough;
under TLS too, without a client certificate, as a browser calls), what they answer,
the event stream's payloads, and the bounds (parameters, open streams)."""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import controller.livemap
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.routes import live
from controller.connlog.log import ConnectionLog
from controller.datapath.connections import ConnEvent
from controller.desired.inventory import Inventory
from controller.livemap.routes import LiveMap
from controller.livemap.view import MAX_EXPAND
from controller.store.sqlite import SqliteStore
from controller.trust.revocation import Revocations
from controller.trust.tls import ServerContext, TlsFiles
from tests.pki import TestCA
from tests.unit import fakes
from tests.unit.api.support import ADMIN, READONLY, bearer
from tests.unit.apiserver import serve

ROUTES = [{"src": "a1", "src_ip": "10.1.0.2", "dst": "b1", "dst_ip": "10.1.0.4",
           "src_host": "h1", "dst_host": "h2", "path": "underlay", "age": 1.0, "idle": 0.1}]


def make_ctx(tmp_path: Path, connlog: ConnectionLog | None, *, tls: bool = False) -> ApiContext:
    store = SqliteStore(tmp_path / "map.db")
    inv = Inventory(store, lambda change: None)
    inv.register_host("h1", "198.18.0.11", "east")
    inv.register_host("h2", "198.18.0.12", "east")
    inv.register_host("h3", "198.18.0.13", "west")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("db", "10.3.0.0/24")
    inv.add_endpoint("a1", "web", "h1")  # 10.1.0.2
    inv.add_endpoint("a2", "web", "h1")  # 10.1.0.3
    inv.add_endpoint("b1", "web", "h2")  # 10.1.0.4
    inv.add_endpoint("d1", "db", "h3")  # 10.3.0.2
    inv.create_group("tiers", ["web", "db"])
    inv.add_rule("network", "db", "deny", "network", "web", "tcp", ["22"])
    inv.set_pair_policy("a1", "d1", "allow")
    return ApiContext(inventory=inv, token=ADMIN, readonly_token=READONLY,
                      runtime=fakes.FakeRuntime(1, ROUTES), openflow_host="0.0.0.0",
                      openflow_port=6653, connlog=connlog, replica={"name": "c0"}, tls=tls,
                      revocations=Revocations(store) if tls else None)


def denied(inv: Inventory, src: str, dst: str) -> ConnEvent:
    s, d = inv.endpoint(src), inv.endpoint(dst)
    site = {h.name: h.site for h in inv.hosts()}
    return ConnEvent(
        "denied", s.ip, d.ip, 6, 40000, 22,
        (s.name, s.network, s.host, site[s.host]), (d.name, d.network, d.host, site[d.host]),
        "deny", "firewall rule", "firewall", "r1", None, s.host)


@pytest.fixture
def connlog() -> ConnectionLog:
    return ConnectionLog()


@pytest.fixture
def ctx(tmp_path: Path, connlog: ConnectionLog) -> Iterator[ApiContext]:
    c = make_ctx(tmp_path, connlog)
    yield c
    c.inventory.store.close()


@pytest.fixture
def livemap() -> LiveMap:
    return LiveMap(max_streams=2)


@pytest.fixture
def client(ctx: ApiContext, livemap: LiveMap) -> Iterator[TestClient]:
    app = create_app(ctx, [live.router, livemap.api_router])
    app.include_router(livemap.page_router)
    with TestClient(app) as c:
        yield c


def test_the_page_is_served_without_a_credential_and_holds_no_data(client: TestClient) -> None:
    page = client.get("/map")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'id="login"' in page.text and "a1" not in page.text
    script = client.get("/map/map.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert "Authorization" in script.text and "sessionStorage" in script.text
    assert client.get("/map/map.css").status_code == 200
    missing = client.get("/map/secrets.txt")
    assert missing.status_code == 404 and "path asset" in missing.json()["detail"]


def test_the_page_loads_nothing_from_elsewhere_and_ships_in_the_package() -> None:
    """No CDN at run time (issue 23): the page's files name no other origin (the SVG
    namespace is a name, never fetched), load only /map/*, and are the package's
    data (pyproject.toml), so the wheel the hosts install carries them."""
    static = Path(controller.livemap.__file__).parent / "static"
    names = sorted(p.name for p in static.iterdir())
    assert names == ["index.html", "map.css", "map.js"]
    for name in names:
        text = (static / name).read_text()
        urls = set(re.findall(r"[a-z]+://[^\s\"')]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text and "url(" not in text.replace("data:", "")
        for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
            assert ref.startswith("/map/"), (name, ref)
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert "static/*" in project["tool"]["setuptools"]["package-data"]["controller.livemap"]


@pytest.mark.parametrize("path", ["/api/v1/map/view", "/api/v1/map/events",
                                  "/api/v1/map/containers/a1"])
def test_the_data_is_refused_without_a_valid_credential(client: TestClient, path: str) -> None:
    none = client.get(path)
    assert none.status_code == 401 and none.json()["detail"] == "missing bearer token"
    wrong = client.get(path, headers=bearer("not-a-token"))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid token"


def test_the_read_only_token_reads_the_picture(client: TestClient) -> None:
    answer = client.get("/api/v1/map/view", headers=bearer(READONLY))
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert view["totals"] == {"sites": 2, "hosts": 3, "containers": 4}
    assert {c["name"]: c["host"] for c in view["containers"]} == {
        "a1": "h1", "a2": "h1", "b1": "h2", "d1": "h3"}
    (edge,) = view["edges"]
    assert (edge["a"], edge["b"], edge["path"], edge["verdict"]) == (
        "c:a1", "c:b1", "underlay", "allow")
    # closed by the operator: sites only, the connection inside east
    closed = client.get("/api/v1/map/view?auto=false", headers=bearer(READONLY)).json()
    assert closed["containers"] == [] and [e["a"] for e in closed["edges"]] == ["s:east"]
    opened = client.get("/api/v1/map/view?auto=false&host=h2", headers=bearer(READONLY)).json()
    assert [c["name"] for c in opened["containers"]] == ["b1"]
    assert [(e["a"], e["b"]) for e in opened["edges"]] == [("c:b1", "h:h1")]


def test_what_may_be_opened_is_bounded_and_refusals_name_the_parameter(
        client: TestClient) -> None:
    too_many = "&".join(f"host=h{i}" for i in range(MAX_EXPAND + 1))
    answer = client.get(f"/api/v1/map/view?{too_many}", headers=bearer(READONLY))
    assert answer.status_code == 422 and "host" in json.dumps(answer.json())
    long = client.get(f"/api/v1/map/view?site={'s' * 254}", headers=bearer(READONLY))
    assert long.status_code == 422 and "site" in json.dumps(long.json())
    mixed = "&".join([*(f"site=s{i}" for i in range(60)), *(f"host=h{i}" for i in range(60))])
    answer = client.get(f"/api/v1/map/view?{mixed}", headers=bearer(READONLY))
    assert answer.status_code == 422
    assert "query parameters site and host" in answer.json()["detail"]


def test_a_container_shows_its_policy_and_recent_connections(
        client: TestClient, ctx: ApiContext, connlog: ConnectionLog) -> None:
    connlog.record([denied(ctx.inventory, "a2", "d1")])
    answer = client.get("/api/v1/map/containers/d1", headers=bearer(READONLY))
    assert answer.status_code == 200, answer.text
    d1 = answer.json()
    assert (d1["ip"], d1["host"], d1["site"]) == ("10.3.0.2", "h3", "west")
    assert d1["network"]["name"] == "db" and d1["groups"] == ["tiers"]
    assert d1["policies"] == [{"a": "a1", "b": "d1", "action": "allow"}]
    assert [(r["on"], r["action"], r["source"], r["ports"]) for r in d1["rules"]] == [
        ("network db", "deny", "network web", ["22"])]
    assert [(c["event"], c["src"]["container"]) for c in d1["connections"]] == [
        ("denied", "a2")]
    missing = client.get("/api/v1/map/containers/nope", headers=bearer(READONLY))
    assert missing.status_code == 404 and "container nope" in missing.json()["detail"]
    long = client.get(f"/api/v1/map/containers/{'c' * 254}", headers=bearer(READONLY))
    assert long.status_code == 422 and "name" in json.dumps(long.json())


class Stream:
    """The server-sent events of one GET /map/events, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> tuple[str, dict[str, Any]]:
        event, data = "message", ""
        for line in self.lines:
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                return event, json.loads(data)
        raise AssertionError("the stream ended")

    def until(self, event: str, check: Any, timeout: float = 10.0) -> tuple[dict[str, Any], float]:
        """The first `event` whose data passes `check`, and how long it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            name, data = self.next()
            if name == event and check(data):
                return data, time.monotonic() - started
        raise AssertionError(f"no {event} event passing the check in {timeout} s")


def test_the_stream_sends_the_picture_then_its_changes(
        ctx: ApiContext, connlog: ConnectionLog, livemap: LiveMap) -> None:
    with serve(ctx, [live.router, livemap.api_router]) as url, httpx.Client(
            base_url=url, timeout=10, headers=bearer(READONLY)) as http, http.stream(
            "GET", "/api/v1/map/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        event, first = stream.next()
        assert event == "view" and first["totals"]["containers"] == 4
        # a denied first packet: its log entry, and the picture with the denied edge
        connlog.record([denied(ctx.inventory, "a2", "d1")])
        batch, _ = stream.until("connections", lambda d: d["entries"])
        assert [(e["event"], e["src"]["container"], e["dst"]["container"])
                for e in batch["entries"]] == [("denied", "a2", "d1")]
        view, took = stream.until("view", lambda d: any(
            e["verdict"] == "deny" for e in d["edges"]))
        assert ("c:a2", "c:d1") in {(e["a"], e["b"]) for e in view["edges"]}
        # a new container: a new picture (the desired state's version changed)
        ctx.inventory.add_endpoint("a3", "web", "h2")
        view, took = stream.until("view", lambda d: d["totals"]["containers"] == 5)
        assert "c:a3" in {c["id"] for c in view["containers"]}
        print(f"\nnew container on the stream after {took:.2f} s")


def test_open_streams_are_bounded(ctx: ApiContext, livemap: LiveMap) -> None:
    with serve(ctx, [live.router, livemap.api_router]) as url, httpx.Client(
            base_url=url, timeout=10, headers=bearer(READONLY)) as http:
        with http.stream("GET", "/api/v1/map/events") as one, \
                http.stream("GET", "/api/v1/map/events") as two:
            # (each Stream holds its lines: a dropped line iterator closes its response)
            first, second = Stream(one), Stream(two)
            assert first.next()[0] == second.next()[0] == "view"
            third = http.get("/api/v1/map/events")
            assert third.status_code == 503
            assert third.json()["detail"] == "map streams: 2 open on this replica already"
        # closed streams are counted out: a new one is let in
        deadline = time.monotonic() + 10
        while livemap.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        with http.stream("GET", "/api/v1/map/events") as again:
            third_stream = Stream(again)
            assert again.status_code == 200 and third_stream.next()[0] == "view"


def trusting(ca: TestCA) -> ssl.SSLContext:
    """A client context that trusts `ca` and presents no certificate (a browser)."""
    return ssl.create_default_context(cafile=str(ca.cert_file))


def test_under_tls_a_browser_reads_with_the_read_only_token_and_no_certificate(
        tmp_path: Path, livemap: LiveMap) -> None:
    ca = TestCA(tmp_path / "pki")
    own = ca.issue("c0", "controller", ips=["127.0.0.1"])
    ctx = make_ctx(tmp_path, ConnectionLog(), tls=True)
    tls = ServerContext(TlsFiles(ca.cert_file, own.cert_file, own.key_file))
    try:
        with serve(ctx, [live.router, livemap.api_router], tls=tls,
                   pages=[livemap.page_router]) as url, httpx.Client(
                base_url=url, timeout=10, verify=trusting(ca)) as http:
            assert http.get("/map").status_code == 200
            assert http.get("/api/v1/map/view").status_code == 401
            answer = http.get("/api/v1/map/view", headers=bearer(READONLY))
            assert answer.status_code == 200 and answer.json()["totals"]["hosts"] == 3
    finally:
        ctx.inventory.store.close()


def test_a_stream_ends_once_its_callers_certificate_is_revoked(
        tmp_path: Path, livemap: LiveMap) -> None:
    """A host's certificate may read the map like any credential; revoked while its
    stream is open, the stream says why and ends (an operator's token reads on)."""
    ca = TestCA(tmp_path / "pki")
    own = ca.issue("c0", "controller", ips=["127.0.0.1"])
    h1 = ca.issue("h1", "host")
    ctx = make_ctx(tmp_path, ConnectionLog(), tls=True)
    assert ctx.revocations is not None
    tls = ServerContext(TlsFiles(ca.cert_file, own.cert_file, own.key_file))
    try:
        as_h1 = trusting(ca)
        as_h1.load_cert_chain(h1.cert_file, h1.key_file)
        with serve(ctx, [live.router, livemap.api_router], tls=tls) as url, httpx.Client(
                base_url=url, timeout=10, verify=as_h1) as host, httpx.Client(
                base_url=url, timeout=10, verify=trusting(ca),
                headers=bearer(READONLY)) as operator, host.stream(
                "GET", "/api/v1/map/events") as mine, operator.stream(
                "GET", "/api/v1/map/events") as theirs:
            assert mine.status_code == theirs.status_code == 200, mine.read()
            revoked, kept = Stream(mine), Stream(theirs)
            assert revoked.next()[0] == kept.next()[0] == "view"
            ctx.revocations.revoke(host="h1", reason="stolen")
            event, data = revoked.next()
            assert event == "refused"
            assert data["detail"].startswith("the certificate of host h1 is revoked")
            with pytest.raises(AssertionError, match="the stream ended"):
                revoked.next()
            ctx.inventory.add_endpoint("a4", "web", "h2")
            kept.until("view", lambda d: d["totals"]["containers"] == 5)
            assert host.get("/api/v1/map/view").status_code == 403
    finally:
        ctx.inventory.store.close()


def test_addresses_in_the_view_are_the_inventorys(client: TestClient, ctx: ApiContext) -> None:
    view = client.get("/api/v1/map/view", headers=bearer(ADMIN)).json()
    for c in view["containers"]:
        assert ipaddress.IPv4Address(c["ip"]) == ctx.inventory.endpoint(c["name"]).ip
