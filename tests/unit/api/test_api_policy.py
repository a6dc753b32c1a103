"""REST API of the policy: roles of the tokens, groups, policies, firewalls, trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.api.auth import Role, check_token, role_of
from controller.api.deps import ApiContext
from controller.desired.events import Change, GroupChanged, PairPolicyChanged, RulesChanged
from tests.unit.api.support import ADMIN, AGENT, READONLY, bearer

# --- roles --------------------------------------------------------------------------------


def test_role_of(ctx: ApiContext) -> None:
    assert role_of(ctx, ADMIN) is Role.ADMIN
    assert role_of(ctx, AGENT) is Role.AGENT
    assert role_of(ctx, READONLY) is Role.READONLY
    assert role_of(ctx, "nope") is None
    assert check_token(ctx, f"Bearer {ADMIN}")
    assert check_token(ctx, f"Bearer {AGENT}")
    assert not check_token(ctx, f"Bearer {READONLY}")  # may not open an agent stream
    ctx.agent_token = ctx.readonly_token = ""
    assert role_of(ctx, "") is None  # unset tokens match nothing


READS = [
    "/api/v1/hosts", "/api/v1/networks", "/api/v1/containers", "/api/v1/groups",
    "/api/v1/policies", "/api/v1/firewalls", "/api/v1/firewalls/rules",
    "/api/v1/firewalls/ports", "/api/v1/routes", "/api/v1/trace?src=w1&dst=w2",
]  # fmt: skip

ADMIN_WRITES = [
    ("PATCH", "/api/v1/networks/web", {"external": True}),
    ("POST", "/api/v1/groups", {"name": "g"}),
    ("DELETE", "/api/v1/groups/g", None),
    ("POST", "/api/v1/groups/g/members", {"network": "web"}),
    ("DELETE", "/api/v1/groups/g/members/web", None),
    ("PUT", "/api/v1/policies/w1/w2", {"action": "deny"}),
    ("DELETE", "/api/v1/policies/w1/w2", None),
    ("PATCH", "/api/v1/policies/w1/w2", {"audit": False}),
    ("PATCH", "/api/v1/firewalls/rules/x", {"audit": False}),
    ("POST", "/api/v1/firewalls/rules",
     {"target_kind": "network", "target": "web", "action": "deny"}),
    ("DELETE", "/api/v1/firewalls/rules/x", None),
    ("POST", "/api/v1/firewalls/ports", {"container": "w1", "host_port": 80, "container_port": 80}),
    ("DELETE", "/api/v1/firewalls/ports/x", None),
    ("DELETE", "/api/v1/firewalls/x", None),
]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("token", [ADMIN, AGENT, READONLY])
def test_every_token_may_read(lab: TestClient, app: Any, token: str, path: str) -> None:
    with TestClient(app, headers=bearer(token)) as c:
        assert c.get(path).status_code == 200


AGENT_WRITES = [
    ("POST", "/api/v1/networks", {"name": "x", "subnet": "10.9.0.0/24"}),
    ("DELETE", "/api/v1/networks/db", None),
    ("POST", "/api/v1/hosts", {"name": "h3", "address": "198.18.0.13"}),
    ("POST", "/api/v1/containers", {"name": "n1", "network": "web", "host": "h1"}),
    ("DELETE", "/api/v1/containers/w1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_WRITES + AGENT_WRITES)
def test_readonly_may_not_write(lab: TestClient, app: Any, method, path, body) -> None:
    with TestClient(app, headers=bearer(READONLY)) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 403
    assert r.json() == {
        "detail": f"the read-only token may not change anything ({method} {path})"
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_WRITES)
def test_agent_may_not_change_policy(lab: TestClient, app: Any, method, path, body) -> None:
    with TestClient(app, headers=bearer(AGENT)) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 403
    assert r.json() == {
        "detail": "the agent token may not change networks, groups, policies or firewalls "
        f"({method} {path}): use the admin token"
    }


def test_agent_may_create_plain_networks_only(lab: TestClient, app: Any) -> None:
    """The Docker network driver creates and deletes networks with the agent token."""
    with TestClient(app, headers=bearer(AGENT)) as c:
        r = c.post("/api/v1/networks", json={"name": "x", "subnet": "10.9.0.0/24"})
        assert (r.status_code, r.json()["external"]) == (201, False)
        assert c.delete("/api/v1/networks/x").status_code == 200
        r = c.post("/api/v1/networks",
                   json={"name": "x", "subnet": "10.9.0.0/24", "external": True})
        assert (r.status_code, r.json()["detail"]) == (
            403, "the agent token may not create an external network (external: true): "
            "use the admin token",
        )
        assert c.get("/api/v1/networks/x").status_code == 404


def test_agent_may_register_hosts_and_change_containers(lab: TestClient, app: Any) -> None:
    with TestClient(app, headers=bearer(AGENT)) as c:
        r = c.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.0.13"})
        assert r.status_code == 200
        r = c.post("/api/v1/containers", json={"name": "n1", "network": "web", "host": "h3"})
        assert r.status_code == 201
        assert c.patch("/api/v1/containers/n1", json={"name": "n2"}).status_code == 200
        assert c.post("/api/v1/containers/n2/relocate", json={"host": "h1"}).status_code == 200
        assert c.delete("/api/v1/containers/n2").status_code == 200


def test_readonly_may_not_register_or_change_containers(lab: TestClient, app: Any) -> None:
    with TestClient(app, headers=bearer(READONLY)) as c:
        r = c.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.0.13"})
        assert (r.status_code, r.json()["detail"]) == (
            403, "the read-only token may not change anything (POST /api/v1/hosts)"
        )
        assert c.delete("/api/v1/containers/w1").status_code == 403
        assert c.post("/api/v1/containers", json={}).status_code == 403


def test_stream_roles(lab: TestClient, app: Any) -> None:
    with TestClient(app) as anon:
        with (
            pytest.raises(WebSocketDisconnect) as exc,
            anon.websocket_connect("/api/v1/hosts/h1/stream", headers=bearer(READONLY)) as ws,
        ):
            ws.receive_json()
        assert exc.value.code == 4401
        with anon.websocket_connect("/api/v1/hosts/h1/stream", headers=bearer(AGENT)) as ws:
            assert ws.receive_json()["host"] == "h1"


def test_unknown_token_is_401_even_for_reads(app: Any) -> None:
    with TestClient(app) as anon:
        r = anon.get("/api/v1/groups", headers=bearer("nope"))
        assert (r.status_code, r.json()) == (401, {"detail": "invalid token"})
        r = anon.get("/api/v1/trace", params={"src": "a", "dst": "b"})
        assert (r.status_code, r.json()) == (401, {"detail": "missing bearer token"})


# --- networks -------------------------------------------------------------------------------


def test_network_external(lab: TestClient) -> None:
    r = lab.post("/api/v1/networks", json={"name": "out", "subnet": "10.8.0.0/24",
                                           "external": True})  # fmt: skip
    assert (r.status_code, r.json()["external"]) == (201, True)
    assert lab.get("/api/v1/networks/web").json()["external"] is False
    r = lab.patch("/api/v1/networks/web", json={"external": True})
    assert (r.status_code, r.json()["external"]) == (200, True)
    assert lab.patch("/api/v1/networks/web", json={}).json()["external"] is True
    r = lab.patch("/api/v1/networks/web", json={"external": "maybe"})
    assert (r.status_code, r.json()["detail"]) == (
        422, "external: Input should be a valid boolean, unable to interpret input"
    )
    r = lab.patch("/api/v1/networks/nope", json={"external": True})
    assert (r.status_code, r.json()["detail"]) == (404, "network nope not found")
    r = lab.patch("/api/v1/networks/web", json={"mtu": 1400})
    assert (r.status_code, r.json()["detail"]) == (422, "mtu: Extra inputs are not permitted")


# --- groups ---------------------------------------------------------------------------------


def test_groups(lab: TestClient, events: list[Change]) -> None:
    r = lab.post("/api/v1/groups", json={"name": "front", "networks": ["web"]})
    assert r.status_code == 201
    g = r.json()
    assert (g["name"], g["networks"]) == ("front", ["web"])
    assert events[-1] == GroupChanged("front", (), ("web",))
    assert lab.get("/api/v1/groups").json() == [g]
    assert lab.get("/api/v1/groups/front").json() == g
    r = lab.post("/api/v1/groups/front/members", json={"network": "api"})
    assert r.json()["networks"] == ["api", "web"]
    assert lab.get("/api/v1/groups/front/members").json() == ["api", "web"]
    r = lab.delete("/api/v1/groups/front/members/web")
    assert r.json()["networks"] == ["api"]
    r = lab.delete("/api/v1/groups/front")
    assert (r.status_code, r.json()["networks"]) == (200, ["api"])
    assert lab.get("/api/v1/groups").json() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("POST", "/api/v1/groups", {"name": "g", "networks": ["nope"]}, 404,
         "network nope not found"),
        ("POST", "/api/v1/groups", {"name": "taken"}, 409, "group taken already exists"),
        ("POST", "/api/v1/groups", {"name": "bad name"}, 422, "name: String should match"),
        ("POST", "/api/v1/groups", {"networks": []}, 422, "name: Field required"),
        ("POST", "/api/v1/groups", {"name": "g", "networks": "web"}, 422,
         "networks: Input should be a valid list"),
        ("POST", "/api/v1/groups", {"name": "g", "networks": ["bad name"]}, 422,
         "networks.0: String should match"),
        ("GET", "/api/v1/groups/nope", None, 404, "group nope not found"),
        ("DELETE", "/api/v1/groups/nope", None, 404, "group nope not found"),
        ("GET", "/api/v1/groups/nope/members", None, 404, "group nope not found"),
        ("POST", "/api/v1/groups/nope/members", {"network": "web"}, 404, "group nope not found"),
        ("POST", "/api/v1/groups/taken/members", {"network": "nope"}, 404,
         "network nope not found"),
        ("POST", "/api/v1/groups/taken/members", {}, 422, "network: Field required"),
        ("DELETE", "/api/v1/groups/taken/members/api", None, 404,
         "network api is not a member of group taken"),
    ],
)
def test_group_errors(lab: TestClient, method, path, body, status, detail) -> None:
    lab.post("/api/v1/groups", json={"name": "taken"})
    r = lab.request(method, path, json=body)
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)


# --- pair policies --------------------------------------------------------------------------


def test_pair_policies(lab: TestClient, events: list[Change]) -> None:
    w2_id = lab.get("/api/v1/containers/w2").json()["id"]
    r = lab.put(f"/api/v1/policies/{w2_id}/w1", json={"action": "deny"})
    assert r.status_code == 200
    p = r.json()
    assert (p["a"], p["b"], p["action"]) == ("w1", "w2", "deny")
    assert events[-1] == PairPolicyChanged("w1", "w2", None, "deny")
    assert lab.get("/api/v1/policies/w2/w1").json() == p
    assert lab.get("/api/v1/policies").json() == [p]
    assert lab.get("/api/v1/policies", params={"container": "w1"}).json() == [p]
    assert lab.get("/api/v1/policies", params={"container": "a1"}).json() == []
    r = lab.put("/api/v1/policies/w1/w2", json={"action": "allow"})
    assert r.json()["action"] == "allow"
    r = lab.delete("/api/v1/policies/w1/w2")
    assert (r.status_code, r.json()["action"]) == (200, "allow")
    assert lab.get("/api/v1/policies").json() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("PUT", "/api/v1/policies/ghost/w1", {"action": "deny"}, 404, "container ghost not found"),
        ("PUT", "/api/v1/policies/w1/w1", {"action": "deny"}, 422,
         "b 'w1' is the same container as a"),
        ("PUT", "/api/v1/policies/w1/w2", {"action": "drop"}, 422,
         "action: Input should be 'allow' or 'deny'"),
        ("PUT", "/api/v1/policies/w1/w2", {}, 422, "action: Field required"),
        ("PUT", "/api/v1/policies/w1/w2", {"action": "deny", "audit": "yes"}, 422,
         "audit: Input should be a valid boolean"),
        ("PATCH", "/api/v1/policies/w1/w2", {"audit": False}, 404,
         "no pair policy between w1 and w2"),
        ("GET", "/api/v1/policies/w1/w2", None, 404, "no pair policy between w1 and w2"),
        ("DELETE", "/api/v1/policies/w1/w2", None, 404, "no pair policy between w1 and w2"),
    ],
)
def test_pair_policy_errors(lab: TestClient, method, path, body, status, detail) -> None:
    r = lab.request(method, path, json=body)
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)


# --- firewalls ------------------------------------------------------------------------------


def test_firewall_rules(lab: TestClient, events: list[Change]) -> None:
    r = lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "allow",
        "source": {"kind": "cidr", "value": "192.0.2.0/24"}, "protocol": "tcp",
        "ports": [80, "8000-8100"],
    })  # fmt: skip
    assert r.status_code == 201
    rule = r.json()
    assert rule["type"] == "rule"
    assert (rule["position"], rule["ports"], rule["source"]) == (
        0, ["80", "8000-8100"], {"kind": "cidr", "value": "192.0.2.0/24"}
    )
    assert events[-1] == RulesChanged("network", "web", ("web",))
    first = lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "deny", "position": 0,
    }).json()  # fmt: skip
    assert first["source"] == {"kind": "any", "value": None}
    listed = lab.get("/api/v1/firewalls/rules", params={"network": "web"}).json()
    assert [x["id"] for x in listed] == [first["id"], rule["id"]]
    assert lab.get("/api/v1/firewalls/rules", params={"network": "api"}).json() == []
    assert lab.get(f"/api/v1/firewalls/rules/{rule['id']}").json()["position"] == 1
    assert lab.get(f"/api/v1/firewalls/{rule['id']}").json()["id"] == rule["id"]
    r = lab.delete(f"/api/v1/firewalls/rules/{first['id']}")
    assert r.status_code == 200
    assert lab.get(f"/api/v1/firewalls/{rule['id']}").json()["position"] == 0
    r = lab.delete(f"/api/v1/firewalls/{rule['id']}")
    assert (r.status_code, r.json()["type"]) == (200, "rule")
    assert lab.get("/api/v1/firewalls").json() == {"rules": [], "ports": []}


def test_a_rule_in_audit_mode_is_enforced_by_one_patch(
    lab: TestClient, events: list[Change]
) -> None:
    rule = lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "deny", "audit": True,
    }).json()  # fmt: skip
    assert rule["audit"] is True
    assert events[-1] == RulesChanged("network", "web", ("web",))
    del events[:]
    r = lab.patch(f"/api/v1/firewalls/rules/{rule['id']}", json={"audit": False})
    assert (r.status_code, r.json()) == (200, rule | {"audit": False})
    assert events == [RulesChanged("network", "web", ("web",))]  # the core revokes on it
    r = lab.patch(f"/api/v1/firewalls/rules/{rule['id']}", json={"audit": False})
    assert r.json()["audit"] is False and len(events) == 1  # no change, no event
    assert lab.get(f"/api/v1/firewalls/{rule['id']}").json()["audit"] is False


def test_a_pair_policy_in_audit_mode_is_enforced_by_one_patch(
    lab: TestClient, events: list[Change]
) -> None:
    p = lab.put("/api/v1/policies/w2/w1", json={"action": "deny", "audit": True}).json()
    assert (p["action"], p["audit"]) == ("deny", True)
    assert events[-1] == PairPolicyChanged("w1", "w2", None, "deny")
    r = lab.patch("/api/v1/policies/w1/w2", json={"audit": False})
    assert (r.status_code, r.json()) == (200, p | {"audit": False})
    assert events[-1] == PairPolicyChanged("w1", "w2", "deny", "deny")
    assert lab.get("/api/v1/policies/w1/w2").json()["audit"] is False


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "audit: Field required"),
        ({"audit": "no"}, "audit: Input should be a valid boolean"),
        ({"audit": 0}, "audit: Input should be a valid boolean"),
        ({"audit": False, "action": "allow"}, "action: Extra inputs are not permitted"),
    ],
)
def test_a_bad_audit_patch_is_refused_naming_the_field(lab: TestClient, body, detail) -> None:
    rule = lab.post("/api/v1/firewalls/rules", json={
        "target_kind": "network", "target": "web", "action": "deny", "audit": True,
    }).json()  # fmt: skip
    r = lab.patch(f"/api/v1/firewalls/rules/{rule['id']}", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(detail), r.json()
    assert lab.get(f"/api/v1/firewalls/{rule['id']}").json()["audit"] is True  # unchanged


def test_published_ports(lab: TestClient) -> None:
    r = lab.post("/api/v1/firewalls/ports",
                 json={"container": "w1", "host_port": 8080, "container_port": 80})
    assert r.status_code == 201
    port = r.json()
    assert (port["type"], port["container"], port["host"], port["protocol"]) == (
        "port", "w1", "h1", "tcp"
    )
    assert lab.get("/api/v1/firewalls/ports").json() == [port]
    assert lab.get("/api/v1/firewalls/ports", params={"container": "w2"}).json() == []
    assert lab.get(f"/api/v1/firewalls/ports/{port['id']}").json() == port
    assert lab.get(f"/api/v1/firewalls/{port['id']}").json() == port
    lab.post("/api/v1/groups", json={"name": "g", "networks": ["web"]})
    rule = lab.post("/api/v1/firewalls/rules",
                    json={"target_kind": "group", "target": "g", "action": "deny"}).json()
    everything = lab.get("/api/v1/firewalls").json()
    assert (everything["rules"], everything["ports"]) == ([rule], [port])
    assert lab.get("/api/v1/firewalls", params={"container": "w1"}).json() == {
        "rules": [], "ports": [port]
    }
    assert lab.get("/api/v1/firewalls", params={"group": "g"}).json() == {
        "rules": [rule], "ports": []
    }
    lab.delete("/api/v1/containers/w1")
    assert lab.get(f"/api/v1/firewalls/{port['id']}").json()["host"] is None
    assert lab.delete(f"/api/v1/firewalls/ports/{port['id']}").json()["id"] == port["id"]
    second = lab.post("/api/v1/firewalls/ports",
                      json={"container": "w2", "host_port": 53, "container_port": 53,
                            "protocol": "udp"}).json()  # fmt: skip
    assert lab.delete(f"/api/v1/firewalls/{second['id']}").json()["type"] == "port"


RULE = {"target_kind": "network", "target": "web", "action": "allow"}


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("rules", RULE | {"target": "nope"}, 404, "network nope not found"),
        ("rules", RULE | {"target_kind": "group", "target": "nope"}, 404, "group nope not found"),
        ("rules", RULE | {"target_kind": "host"}, 422,
         "target_kind: Input should be 'network' or 'group'"),
        ("rules", RULE | {"action": "drop"}, 422, "action: Input should be 'allow' or 'deny'"),
        ("rules", {"target": "web", "action": "allow"}, 422, "target_kind: Field required"),
        ("rules", RULE | {"protocol": "sctp"}, 422, "protocol: Input should be"),
        ("rules", RULE | {"ports": ["80"]}, 422, "ports need protocol tcp or udp"),
        ("rules", RULE | {"protocol": "tcp", "ports": [0]}, 422,
         "ports entry '0' is out of range 1-65535"),
        ("rules", RULE | {"protocol": "tcp", "ports": [10**30]}, 422,
         "ports.0: Input should be a valid string"),
        ("rules", RULE | {"protocol": "tcp", "ports": [True]}, 422,
         "ports.0: Input should be a valid string"),
        ("rules", RULE | {"protocol": "tcp", "ports": ["http"]}, 422,
         "ports entry 'http' is not a port or a range"),
        ("rules", RULE | {"protocol": "tcp", "ports": ["9-8"]}, 422,
         "ports entry '9-8' is an empty range"),
        ("rules", RULE | {"source": {"kind": "cidr", "value": "10.0.0.1/8"}}, 422,
         "source.value 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"),
        ("rules", RULE | {"source": {"kind": "cidr"}}, 422,
         "source.value is required for source kind cidr"),
        ("rules", RULE | {"source": {"kind": "container", "value": "ghost"}}, 404,
         "container ghost not found"),
        ("rules", RULE | {"source": {"kind": "planet"}}, 422, "source.kind: Input should be"),
        ("rules", RULE | {"source": "any"}, 422, "source: Input should be a valid dictionary"),
        ("rules", RULE | {"position": 5}, 422, "position 5 is out of range 0-0"),
        ("rules", RULE | {"position": -1}, 422, "position: Input should be greater than"),
        ("rules", RULE | {"audit": "true"}, 422, "audit: Input should be a valid boolean"),
        ("ports", {"container": "ghost", "host_port": 1, "container_port": 1}, 404,
         "container ghost not found"),
        ("ports", {"container": "w1", "host_port": 0, "container_port": 1}, 422,
         "host_port: Input should be greater than or equal to 1"),
        ("ports", {"container": "w1", "host_port": 1, "container_port": 70000}, 422,
         "container_port: Input should be less than or equal to 65535"),
        ("ports", {"container": "w1", "host_port": 1, "container_port": 1, "protocol": "icmp"},
         422, "protocol: Input should be 'tcp' or 'udp'"),
        ("ports", {"container": "w3", "host_port": 8080, "container_port": 1}, 409,
         "host_port 8080/tcp on host h1 is already published for container w1"),
    ],
)
def test_firewall_errors(lab: TestClient, path, body, status, detail) -> None:
    lab.post("/api/v1/firewalls/ports",
             json={"container": "w1", "host_port": 8080, "container_port": 80})
    r = lab.post(f"/api/v1/firewalls/{path}", json=body)
    assert r.status_code == status, r.json()
    assert r.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        ("GET", "/api/v1/firewalls/rules/x", "firewall rule x not found"),
        ("DELETE", "/api/v1/firewalls/rules/x", "firewall rule x not found"),
        ("PATCH", "/api/v1/firewalls/rules/x", "firewall rule x not found"),
        ("GET", "/api/v1/firewalls/ports/x", "published port x not found"),
        ("DELETE", "/api/v1/firewalls/ports/x", "published port x not found"),
        ("GET", "/api/v1/firewalls/x", "firewall rule or published port x not found"),
        ("DELETE", "/api/v1/firewalls/x", "firewall rule or published port x not found"),
    ],
)
def test_firewall_not_found(lab: TestClient, method, path, detail) -> None:
    r = lab.request(method, path, json={"audit": False} if method == "PATCH" else None)
    assert (r.status_code, r.json()) == (404, {"detail": detail})


def test_error_with_a_lone_surrogate_is_still_a_4xx(lab: TestClient) -> None:
    """JSON may carry a lone surrogate; the answer is a 4xx naming the field, never a 500."""
    r = lab.post("/api/v1/networks", content=b'{"name": "x", "subnet": "\\ud800"}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("subnet: ")


# --- controller options -------------------------------------------------------------------


def test_read_role_token(tmp_path: Path) -> None:
    from controller.settings import read_role_token

    assert read_role_token(None, "agent", ADMIN) == ""
    f = tmp_path / "agent.token"
    with pytest.raises(ValueError, match=f"agent token file {f}: No such file or directory"):
        read_role_token(f, "agent", ADMIN)
    f.write_text("\n")
    with pytest.raises(ValueError, match=f"agent token file {f} is empty"):
        read_role_token(f, "agent", ADMIN)
    f.write_text(ADMIN + "\n")
    with pytest.raises(ValueError, match=f"read-only token file {f} holds the admin token"):
        read_role_token(f, "read-only", ADMIN)
    f.write_text(" agent-secret \n")
    assert read_role_token(f, "agent", ADMIN) == "agent-secret"


def test_openapi_documents_the_policy_api(app: Any) -> None:
    with TestClient(app) as anon:
        paths = anon.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/groups", "/api/v1/groups/{name}/members", "/api/v1/policies/{a}/{b}",
                 "/api/v1/firewalls", "/api/v1/firewalls/rules", "/api/v1/firewalls/ports",
                 "/api/v1/firewalls/{item_id}", "/api/v1/trace"):  # fmt: skip
        assert path in paths, path


def test_container_ports_for_the_agent(lab: TestClient, app: Any) -> None:
    """The Docker plugin publishes `docker run -p` ports with the agent token, through
    the container; the firewall routes stay admin-only."""
    with TestClient(app, headers=bearer(AGENT)) as c:
        r = c.post("/api/v1/containers/w1/ports", json={"host_port": 8081, "container_port": 7000})
        assert r.status_code == 201, r.text
        port = r.json()
        assert (port["container"], port["host"], port["host_port"], port["protocol"]) == (
            "w1", "h1", 8081, "tcp"
        )
        assert c.get("/api/v1/containers/w1/ports").json() == [port]
        assert c.get("/api/v1/firewalls/ports").json() == [port]  # daolictl firewall list
        r = c.post("/api/v1/containers/w3/ports", json={"host_port": 8081, "container_port": 1})
        assert (r.status_code, r.json()["detail"]) == (
            409, "host_port 8081/tcp on host h1 is already published for container w1"
        )
        r = c.post("/api/v1/firewalls/ports",
                   json={"container": "w1", "host_port": 8082, "container_port": 7000})
        assert r.status_code == 403
        r = c.delete(f"/api/v1/containers/w3/ports/{port['id']}")
        assert (r.status_code, r.json()["detail"]) == (
            404, f"published port {port['id']} is not one of container w3"
        )
        assert c.delete(f"/api/v1/containers/w1/ports/{port['id']}").json()["id"] == port["id"]
        assert c.get("/api/v1/containers/w1/ports").json() == []
    with TestClient(app, headers=bearer(READONLY)) as c:
        r = c.post("/api/v1/containers/w1/ports", json={"host_port": 1, "container_port": 1})
        assert r.status_code == 403


def test_internal_network_and_reserved_addresses(lab: TestClient) -> None:
    r = lab.post("/api/v1/networks", json={
        "name": "quiet", "subnet": "10.8.0.0/24", "internal": True, "reserved": ["10.8.0.2"],
    })
    assert r.status_code == 201, r.text
    assert (r.json()["internal"], r.json()["reserved"]) == (True, ["10.8.0.2"])
    r = lab.post("/api/v1/containers", json={"name": "q1", "network": "quiet", "host": "h1"})
    assert r.json()["ip"] == "10.8.0.3"
    r = lab.patch("/api/v1/networks/quiet", json={"external": True})
    assert (r.status_code, r.json()["detail"]) == (
        409, "network quiet is internal: it has no external access"
    )
    r = lab.post("/api/v1/networks", json={
        "name": "x", "subnet": "10.9.0.0/24", "reserved": ["10.9.0.1" + "0" * 20],
    })
    assert r.status_code == 422
    r = lab.post("/api/v1/networks", json={
        "name": "x", "subnet": "10.9.0.0/24", "labels": {"bad key": "v"}})
    assert r.status_code == 422 and "labels" in str(r.json()["detail"])
    r = lab.post("/api/v1/networks", json={
        "name": "x", "subnet": "10.9.0.0/24", "labels": {f"k{i}": "" for i in range(33)}})
    assert r.status_code == 422
    r = lab.post("/api/v1/networks", json={
        "name": "x", "subnet": "10.9.0.0/24", "labels": {"team": "blue"}})
    assert (r.status_code, r.json()["labels"]) == (201, {"team": "blue"})
