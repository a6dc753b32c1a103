"""Authorization by identity under TLS (controller/api/auth.py, docs/security.md,
"Identity per host"): a host's certificate acts for its own host only, a replica's
for the replica endpoints, the agent token only reads, a revoked certificate is
refused.  Each attack has its legitimate use with the same credential beside it.

The certificate reaches the routes as the ASGI TLS extension, put there by the
server's protocols (controller/api/tlsscope.py); these tests put it there with the
same wrapper, and tests/unit/api/test_tlsscope.py runs the real HTTPS server."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.agents.hub import AgentHub
from controller.api import metrics
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.routes import exports, liveness, stream
from controller.api.routes.containers import MOVES
from controller.api.routes.stream import CLOSE_FORBIDDEN
from controller.api.tlsscope import with_tls_scope
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from controller.trust.revocation import Revocations
from tests.pki import Issued, TestCA

ADMIN, AGENT, READONLY = "admin-token", "agent-token", "readonly-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Lab:
    ctx: ApiContext
    app: Any
    ca: TestCA
    revocations: Revocations
    certs: dict[str, Issued]

    def client(self, cert: str | None = None, token: str | None = None) -> TestClient:
        """A client presenting the certificate `cert` (a key of `certs`) and/or a token."""
        extension = {"client_cert_chain": [self.certs[cert].cert_file.read_text()]
                     if cert else []}
        return TestClient(with_tls_scope(self.app, extension),
                          headers=bearer(token) if token else None)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """An app under TLS (leading, with a real hub) with hosts h1, h2, network web and
    containers w1 (h1), w2 (h2); certificates of h1, h2 and replica c1."""
    store = SqliteStore(tmp_path / "db")
    inventory = Inventory(store, lambda change: None)
    inventory.register_host("h1", "198.18.0.1")
    inventory.register_host("h2", "198.18.0.2")
    inventory.create_network("web", "10.1.0.0/24")
    inventory.add_endpoint("w1", "web", "h1")
    inventory.add_endpoint("w2", "web", "h2")
    roles = Roles()
    roles.set_master(1)
    runtime = DatapathRuntime(inventory.index, roles, agents=AgentHub)
    hub = runtime.agents
    assert isinstance(hub, AgentHub)
    revocations = Revocations(store)
    ctx = ApiContext(inventory=inventory, token=ADMIN, runtime=runtime,
                     openflow_host="0.0.0.0", openflow_port=6653, roles=roles, hub=hub,
                     agent_token=AGENT, readonly_token=READONLY, tls=True,
                     revocations=revocations)
    ca = TestCA(tmp_path / "pki")
    certs = {"h1": ca.issue("h1", "host"), "h2": ca.issue("h2", "host"),
             "c1": ca.issue("c1", "controller"), "etcd": ca.issue("m1", "etcd")}
    app = create_app(ctx, [stream.router, liveness.router, exports.router])
    app.include_router(metrics.router)  # beside /api/v1, as controller/main.py does
    yield Lab(ctx, app, ca, revocations, certs)
    store.close()


def host_body(name: str, last: int) -> dict[str, str]:
    return {"name": name, "address": f"198.18.0.{last}"}


# --- hosts ---------------------------------------------------------------------------

def test_a_host_registers_itself_and_not_another_host(lab: Lab) -> None:
    with lab.client("h1") as h1:
        assert h1.post("/api/v1/hosts", json=host_body("h1", 1)).status_code == 200
        r = h1.post("/api/v1/hosts", json={**host_body("h2", 2), "relay": True,
                                           "wg_endpoint": "203.0.113.9:51820"})
        assert r.status_code == 403
        assert r.json()["detail"] == ("the certificate of host h1 may not register the "
                                      "record of host h2, only of its own")
        assert h1.post("/api/v1/hosts", json=host_body("h9", 9)).status_code == 403
    assert lab.ctx.inventory.host("h2").wg_endpoint is None  # unchanged


def test_a_host_rotates_only_its_own_key(lab: Lab) -> None:
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/hosts/h2/rotate-key")
        assert r.status_code == 403 and "rotate the WireGuard key of host h2" in r.text
        # its own: past authorization (h1 has no WireGuard interface here: 409)
        r = h1.post("/api/v1/hosts/h1/rotate-key")
        assert r.status_code == 409 and "no WireGuard interface" in r.text


def test_a_host_reads_the_desired_state(lab: Lab) -> None:
    with lab.client("h1") as h1:
        for path in ("/hosts", "/networks", "/containers", "/groups", "/policies"):
            assert h1.get("/api/v1" + path).status_code == 200, path


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/groups", {"name": "g", "networks": ["web"]}),
    ("PUT", "/policies/w1/w2", {"action": "deny"}),
    ("POST", "/firewalls/rules", {"target_kind": "network", "target": "web",
                                  "action": "deny"}),
])
def test_a_host_changes_no_network_group_policy_or_firewall(
    lab: Lab, method: str, path: str, body: dict[str, Any]
) -> None:
    with lab.client("h1") as h1:
        r = h1.request(method, "/api/v1" + path, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith("the certificate of host h1 may not change ")
    assert r.json()["detail"].endswith("an operator does")
    with lab.client(token=ADMIN) as admin:  # the operator may
        assert admin.request(method, "/api/v1" + path, json=body).status_code in (200, 201)


def test_a_host_deletes_no_network(lab: Lab) -> None:
    with lab.client("h1") as h1:
        r = h1.delete("/api/v1/networks/web")
    assert r.status_code == 403 and "may not change networks" in r.text
    assert lab.ctx.inventory.network("web")
    with lab.client(token=ADMIN) as admin:  # the operator may (past authorization:
        r = admin.delete("/api/v1/networks/web")  # web still has containers)
    assert r.status_code == 409, r.text


def test_a_host_creates_a_network_but_not_an_external_one(lab: Lab) -> None:
    """`docker network create -d daolinet` on a host: its driver creates the network
    with the host's certificate; external access stays an operator's decision."""
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/networks", json={"name": "out", "subnet": "10.8.0.0/24",
                                              "external": True})
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == (
            "the certificate of host h1 may not create an external network "
            "(external: true): use the admin token")
        r = h1.post("/api/v1/networks", json={"name": "db", "subnet": "10.9.0.0/24"})
        assert r.status_code == 201, r.text
    assert lab.ctx.inventory.network("db").external is False


# --- containers ----------------------------------------------------------------------

def test_a_host_adds_changes_and_removes_only_its_own_containers(lab: Lab) -> None:
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/containers", json={"name": "x2", "network": "web",
                                                "host": "h2"})
        assert r.status_code == 403 and "add a container of host h2" in r.text
        r = h1.post("/api/v1/containers", json={"name": "x1", "network": "web",
                                                "host": "h1"})
        assert r.status_code == 201
        r = h1.patch("/api/v1/containers/w2", json={"name": "stolen"})
        assert r.status_code == 403 and "change container w2 of host h2" in r.text
        assert h1.patch("/api/v1/containers/w1", json={"name": "w1b"}).status_code == 200
        r = h1.delete("/api/v1/containers/w2")
        assert r.status_code == 403 and "remove container w2 of host h2" in r.text
        assert h1.delete("/api/v1/containers/x1").status_code == 200
    assert lab.ctx.inventory.endpoint("w2").host == "h2"


def test_a_host_relocates_only_its_own_or_a_moved_container(lab: Lab) -> None:
    inventory = lab.ctx.inventory
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/containers/w2/relocate", json={"host": "h1"})
        assert r.status_code == 403
        assert "may not relocate container w2 of host h2" in r.text
        r = h1.post("/api/v1/containers/w1/relocate", json={"host": "h2"})
        assert r.status_code == 403 and "of host h2, only of its own" in r.text
        assert inventory.endpoint("w2").host == "h2"
        # an operator's move of w2 to h1 under way: h1 relocates it to itself
        w2 = inventory.endpoint("w2")
        inventory.store.put(MOVES, w2.id, {"to": "h1", "at": datetime.datetime.now(
            datetime.UTC).timestamp()})
        assert h1.post("/api/v1/containers/w2/relocate",
                       json={"host": "h1"}).status_code == 200
    assert inventory.endpoint("w2").host == "h1"


def test_a_host_starts_no_container_move(lab: Lab) -> None:
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/containers/w1/move", json={"host": "h2"})
    assert r.status_code == 403
    assert r.json()["detail"] == ("the certificate of host h1 may not start a container "
                                  "move: an operator does")


# --- tokens under TLS ------------------------------------------------------------------

def test_the_agent_token_only_reads_under_tls(lab: Lab) -> None:
    with lab.client(token=AGENT) as agent:
        assert agent.get("/api/v1/hosts").status_code == 200
        r = agent.post("/api/v1/hosts", json=host_body("h1", 1))
        assert r.status_code == 403
        assert "the agent token may not change anything under TLS" in r.text
        r = agent.post("/api/v1/containers", json={"name": "x", "network": "web",
                                                   "host": "h1"})
        assert r.status_code == 403


def test_the_operator_tokens_work_under_tls(lab: Lab) -> None:
    with lab.client(token=ADMIN) as admin:
        assert admin.post("/api/v1/hosts", json=host_body("h3", 3)).status_code == 200
        assert admin.post("/api/v1/networks", json={"name": "db", "subnet":
                                                    "10.3.0.0/24"}).status_code == 201
    with lab.client(token=READONLY) as readonly:
        assert readonly.get("/api/v1/hosts").status_code == 200
        assert readonly.post("/api/v1/hosts", json=host_body("h4", 4)).status_code == 403


def test_a_certificate_of_another_role_needs_a_token(lab: Lab) -> None:
    with lab.client("etcd") as member:
        r = member.get("/api/v1/hosts")
    assert r.status_code == 401 and r.json()["detail"] == "missing bearer token"


def test_a_host_certificate_with_the_admin_token_acts_as_the_host(lab: Lab) -> None:
    """The certificate names the caller: a host's key and a leaked token together do
    not act for another host."""
    with lab.client("h1", token=ADMIN) as h1:
        assert h1.post("/api/v1/hosts", json=host_body("h2", 2)).status_code == 403


# --- streams -------------------------------------------------------------------------

def served(lab: Lab, host: str) -> bool:
    """Whether the hub holds a stream of `host` (its snapshot waits for a switch)."""
    hub = lab.ctx.hub
    assert hub is not None
    return host in hub._sessions

def test_a_host_opens_its_own_stream_only(lab: Lab) -> None:
    with lab.client("h1") as h1:
        with h1.websocket_connect("/api/v1/hosts/h1/stream"):
            assert served(lab, "h1")
        with pytest.raises(WebSocketDisconnect) as refused, \
                h1.websocket_connect("/api/v1/hosts/h2/stream") as ws:
            ws.receive_json()
        assert refused.value.code == 4403
        assert refused.value.reason == ("the certificate of host h1 may not open "
                                        "the stream of host h2, only its own")
        assert not served(lab, "h2")


@pytest.mark.parametrize(("token", "code"), [(AGENT, 403), (ADMIN, 403), (None, 401)])
def test_under_tls_a_stream_needs_its_host_certificate(lab: Lab, token: str | None,
                                                       code: int) -> None:
    with lab.client(token=token) as client, \
            pytest.raises(WebSocketDisconnect) as refused, \
            client.websocket_connect("/api/v1/hosts/h1/stream") as ws:
        ws.receive_json()
    assert refused.value.code == 4000 + code
    detail = refused.value.reason
    if token:
        assert detail == (f"the {'agent' if token == AGENT else 'admin'} token may not open "
                          "the stream of host h1: it needs the certificate of host h1 "
                          "(OU=host, CN=h1)")
    else:
        assert detail == "missing bearer token"


def test_an_open_stream_is_closed_once_its_host_is_revoked(lab: Lab) -> None:
    with lab.client("h1") as h1, h1.websocket_connect("/api/v1/hosts/h1/stream") as ws:
        assert served(lab, "h1")
        lab.revocations.revoke(host="h1", reason="stolen laptop")
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_json()
    assert closed.value.code == CLOSE_FORBIDDEN
    assert closed.value.reason.startswith("the certificate of host h1 is revoked (host-h1")


# --- revocation ------------------------------------------------------------------------

def test_a_revoked_serial_is_refused_and_other_certificates_are_not(lab: Lab) -> None:
    lab.revocations.revoke(serial=lab.certs["h1"].serial, reason="key leaked")
    with lab.client("h1") as h1:
        r = h1.get("/api/v1/hosts")
        assert r.status_code == 403
        assert r.json()["detail"] == (f"the certificate of host h1 is revoked (serial-"
                                      f"{lab.certs['h1'].serial:x}: key leaked)")
        # refused before its body is read, too (controller/api/limits.py)
        assert h1.post("/api/v1/hosts", json=host_body("h1", 1)).status_code == 403
    with lab.client("h2") as h2:
        assert h2.get("/api/v1/hosts").status_code == 200


def test_a_revoked_host_is_refused_until_a_new_certificate(lab: Lab) -> None:
    lab.revocations.revoke(host="h1")
    with lab.client("h1") as h1:
        assert h1.get("/api/v1/hosts").status_code == 403
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    lab.certs["h1-new"] = lab.ca.issue("h1", "host", not_before=later, file_stem="h1-new")
    with lab.client("h1-new") as h1:
        assert h1.post("/api/v1/hosts", json=host_body("h1", 1)).status_code == 200


# --- replica endpoints ------------------------------------------------------------------

@pytest.mark.parametrize(("cert", "token"), [("h1", None), (None, ADMIN), (None, AGENT)])
def test_under_tls_replica_endpoints_need_a_replica_certificate(
    lab: Lab, cert: str | None, token: str | None
) -> None:
    with lab.client(cert, token) as client:
        r = client.get("/api/v1/replicas/routes")
        assert r.status_code == 403 and "needs a replica certificate" in r.text, r.text
        r = client.post("/api/v1/replicas/agent-command", json={"host": "h1", "op": "x"})
        assert r.status_code == 403
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/api/v1/replicas/alive") as ws:
            ws.receive_json()
        assert refused.value.code == 4403
        assert "needs a replica certificate" in refused.value.reason


def test_a_replica_certificate_reaches_the_replica_endpoints(lab: Lab) -> None:
    with lab.client("c1") as c1:
        # past authorization: this app does not spread masters (404 says so)
        r = c1.get("/api/v1/replicas/routes")
        assert r.status_code == 404 and "not spread" in r.text
        # and it acts as the admin does
        assert c1.post("/api/v1/networks", json={"name": "db", "subnet":
                                                 "10.3.0.0/24"}).status_code == 201


def test_without_tls_the_agent_token_acts_for_any_host(lab: Lab) -> None:
    """Development (--insecure-plaintext): today's behaviour."""
    lab.ctx.tls = False
    with lab.client(token=AGENT) as agent:
        assert agent.post("/api/v1/hosts", json=host_body("h2", 2)).status_code == 200
        with agent.websocket_connect("/api/v1/hosts/h1/stream"):
            assert served(lab, "h1")



# --- the revocation API ------------------------------------------------------------------

def test_an_operator_revokes_a_host_through_the_api(lab: Lab) -> None:
    with lab.client("h1") as h1:
        assert h1.get("/api/v1/hosts").status_code == 200
        r = h1.post("/api/v1/revocations", json={"host": "h2"})
        assert r.status_code == 403 and "may not change" in r.text
        r = h1.get("/api/v1/revocations")
        assert r.status_code == 403 and "may not read the revocations" in r.text
    with lab.client(token=ADMIN) as admin:
        r = admin.post("/api/v1/revocations", json={"host": "h1", "reason": "stolen"})
        assert r.status_code == 201
        assert r.json()["key"] == "host-h1" and r.json()["reason"] == "stolen"
        r = admin.post("/api/v1/revocations", json={"serial": "0a:ff"})
        assert r.status_code == 201 and r.json()["serial"] == "aff"
    with lab.client(token=READONLY) as readonly:
        assert [r["key"] for r in readonly.get("/api/v1/revocations").json()] == [
            "host-h1", "serial-aff"]
        assert readonly.post("/api/v1/revocations", json={"host": "h2"}).status_code == 403
    with lab.client("h1") as h1:
        r = h1.get("/api/v1/hosts")
        assert r.status_code == 403 and "is revoked (host-h1: stolen)" in r.text


@pytest.mark.parametrize(("body", "field"), [
    ({}, "give either host or serial"),
    ({"host": "h1", "serial": "0a"}, "give either host or serial"),
    ({"serial": "zz"}, "serial 'zz' is not a certificate serial"),
    ({"host": "h1", "reason": "x" * 201}, "reason"),
])
def test_a_revocation_names_its_bad_field(lab: Lab, body: dict[str, Any], field: str) -> None:
    with lab.client(token=ADMIN) as admin:
        r = admin.post("/api/v1/revocations", json=body)
    assert r.status_code == 422 and field in r.text, r.text


def test_without_tls_there_is_nothing_to_revoke(lab: Lab) -> None:
    lab.ctx.revocations = None
    with lab.client(token=ADMIN) as admin:
        r = admin.post("/api/v1/revocations", json={"host": "h1"})
    assert r.status_code == 409 and "without TLS" in r.text


# --- endpoints outside /api/v1 ---------------------------------------------------------

def test_under_tls_metrics_need_a_credential_docs_and_liveness_do_not(lab: Lab) -> None:
    """/metrics names every host and how busy it is: a credential under TLS (the
    read-only token is enough, for Prometheus); /healthz, /docs and /openapi.json
    show no state."""
    with lab.client() as anonymous:
        r = anonymous.get("/metrics")
        assert (r.status_code, r.json()["detail"]) == (401, "missing bearer token")
        for path in ("/healthz", "/docs", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path
    for cert, token in ((None, READONLY), ("h1", None), ("c1", None)):
        with lab.client(cert, token) as reader:
            r = reader.get("/metrics")
            assert r.status_code == 200 and "daolinet_switches_connected" in r.text
    lab.revocations.revoke(host="h1", reason="stolen")
    with lab.client("h1") as revoked:
        assert revoked.get("/metrics").status_code == 403


# --- published ports of a container (`docker run -p` through the host's plugin) ---------

def test_a_host_publishes_ports_of_its_own_containers_only(lab: Lab) -> None:
    port = {"host_port": 8081, "container_port": 80, "protocol": "tcp"}
    with lab.client("h1") as h1:
        r = h1.post("/api/v1/containers/w2/ports", json=port)
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == ("the certificate of host h1 may not publish a port of "
                                      "container w2 of host h2, only of its own")
        r = h1.post("/api/v1/containers/w1/ports", json=port)
        assert r.status_code == 201, r.text
        published = r.json()["id"]
    with lab.client("h2") as h2:
        r = h2.delete(f"/api/v1/containers/w1/ports/{published}")
        assert r.status_code == 403, r.text
        assert "may not unpublish a port of container w1 of host h1" in r.json()["detail"]
    with lab.client("h1") as h1:
        assert h1.delete(f"/api/v1/containers/w1/ports/{published}").status_code == 200
