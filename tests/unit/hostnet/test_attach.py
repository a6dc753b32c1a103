"""Attach/detach orchestration with fakes: ordering, rollback, error mapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostnet.agent.client import ControllerError
from hostnet.agent.localapi import create_app
from hostnet.host.attach import Attacher, AttachError, AttachRequest
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import OvsError
from hostnet.host.ports import peer_temp_name

HOST = "h1"


def endpoint(name: str = "web", host: str = HOST) -> dict[str, Any]:
    return {
        "id": "ep-1", "name": name, "network": "blue", "host": host, "ip": "10.1.0.5",
        "mac": "02:da:0a:01:00:05", "port": "dlep1", "prefixlen": 24,
        "gateway": "10.1.0.1", "mtu": 1450, "created_at": "2024-01-01T00:00:00Z",
    }


class FakeController:
    def __init__(self, record: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.record = record or endpoint()
        self.fail_create: ControllerError | None = None
        self.fail_get: ControllerError | None = None

    async def create_container(self, *, name, network, host, ip, mac):
        self.calls.append(("create", {"name": name, "network": network, "host": host,
                                      "ip": ip, "mac": mac}))
        if self.fail_create:
            raise self.fail_create
        return dict(self.record, name=name)

    async def get_container(self, name_or_id):
        self.calls.append(("get", name_or_id))
        if self.fail_get:
            raise self.fail_get
        return self.record

    async def delete_container(self, name_or_id):
        self.calls.append(("delete", name_or_id))


class FakeOps:
    """Records steps; `fail_at` names the step that raises."""

    def __init__(self, fail_at: str | None = None, netns: bool = True) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_at = fail_at
        self.netns = netns
        self.links: set[str] = set()
        self.ports: set[str] = set()

    def _step(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name == self.fail_at:
            if name == "add_port":
                raise OvsError("ovs-vsctl add-port: boom")
            raise NetlinkError(f"{name}: boom")

    def netns_exists(self, name):
        self.calls.append(("netns_exists", name))
        return self.netns

    def create_veth(self, host_name, peer_name, mtu):
        self._step("create_veth", (host_name, peer_name, mtu))
        self.links.add(host_name)

    def setup_container_side(self, peer_name, netns, ifname, **kw):
        self._step("setup_container_side", (peer_name, netns, ifname, kw))

    def host_side_up(self, name, mtu):
        self._step("host_side_up", (name, mtu))

    def add_port(self, port, external_ids):
        self._step("add_port", (port, external_ids))
        self.ports.add(port)

    def del_port(self, port):
        self.calls.append(("del_port", port))
        self.ports.discard(port)

    def delete_link(self, name):
        self.calls.append(("delete_link", name))
        self.links.discard(name)


def run(coro):
    return asyncio.run(coro)


def test_attach_happy_path_order_and_arguments():
    ctl, ops = FakeController(), FakeOps()
    att = Attacher(HOST, ctl, ops)
    rec = run(att.attach(AttachRequest(netns="ns1", network="blue", ip="10.1.0.5")))
    assert rec["port"] == "dlep1" and rec["name"] == "ns1"  # name defaults to the netns
    assert ctl.calls == [("create", {"name": "ns1", "network": "blue", "host": HOST,
                                      "ip": "10.1.0.5", "mac": None})]
    assert [c[0] for c in ops.calls] == [
        "netns_exists", "create_veth", "setup_container_side", "host_side_up", "add_port"]
    peer = peer_temp_name("ep-1")
    assert len(peer) <= 15
    assert ops.calls[1][1] == ("dlep1", peer, 1450)
    assert ops.calls[2][1] == (peer, "ns1", "eth0", {
        "mac": "02:da:0a:01:00:05", "mtu": 1450, "ip": "10.1.0.5", "prefixlen": 24,
        "gateway": "10.1.0.1"})
    assert ops.calls[4][1] == ("dlep1", {"daolinet-endpoint": "ep-1",
                                         "daolinet-container": "ns1"})


def test_missing_netns_is_checked_before_the_controller():
    ctl, ops = FakeController(), FakeOps(netns=False)
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).attach(AttachRequest(netns="nope", network="blue")))
    assert ei.value.status == 400
    assert ei.value.detail == "network namespace nope does not exist"
    assert ctl.calls == []


def test_controller_error_is_passed_on():
    ctl, ops = FakeController(), FakeOps()
    ctl.fail_create = ControllerError(409, "address 10.1.0.5 is in use")
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).attach(AttachRequest(netns="ns1", network="blue")))
    assert (ei.value.status, ei.value.detail) == (409, "address 10.1.0.5 is in use")
    assert [c[0] for c in ops.calls] == ["netns_exists"]


@pytest.mark.parametrize(
    ("fail_at", "undo"),
    [
        ("create_veth", []),
        ("setup_container_side", [("delete_link", "dlep1")]),
        ("host_side_up", [("delete_link", "dlep1")]),
        ("add_port", [("delete_link", "dlep1")]),
    ],
)
def test_failure_rolls_back_every_earlier_step(fail_at, undo):
    ctl, ops = FakeController(), FakeOps(fail_at=fail_at)
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).attach(AttachRequest(netns="ns1", network="blue")))
    assert ei.value.status == 500
    assert "boom" in ei.value.detail
    idx = [c[0] for c in ops.calls].index(fail_at)
    assert ops.calls[idx + 1:] == undo
    # the controller record goes last (reverse order of creation)
    assert ctl.calls[-1] == ("delete", "ep-1")
    assert not ops.links and not ops.ports


def test_bad_port_name_from_controller_rolls_back():
    rec = endpoint()
    rec["port"] = "x" * 16
    ctl, ops = FakeController(rec), FakeOps()
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).attach(AttachRequest(netns="ns1", network="blue")))
    assert ei.value.status == 502
    assert ctl.calls[-1] == ("delete", "ep-1")
    assert [c[0] for c in ops.calls] == ["netns_exists"]


def test_detach_removes_port_link_then_endpoint():
    ctl, ops = FakeController(), FakeOps()
    assert run(Attacher(HOST, ctl, ops).detach("web")) == {"detached": "web"}
    assert ops.calls == [("del_port", "dlep1"), ("delete_link", "dlep1")]
    assert ctl.calls == [("get", "web"), ("delete", "ep-1")]


def test_detach_refuses_endpoint_of_other_host():
    ctl, ops = FakeController(endpoint(host="h2")), FakeOps()
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).detach("web"))
    assert ei.value.status == 409
    assert ops.calls == []


def test_detach_unknown_is_404():
    ctl, ops = FakeController(), FakeOps()
    ctl.fail_get = ControllerError(404, "no container web")
    with pytest.raises(AttachError) as ei:
        run(Attacher(HOST, ctl, ops).detach("web"))
    assert (ei.value.status, ei.value.detail) == (404, "no container web")


def test_local_api_errors_are_detail_messages():
    client = TestClient(create_app(Attacher(HOST, FakeController(), FakeOps(netns=False))))
    r = client.post("/v1/attach", json={"netns": "nope", "network": "blue"})
    assert r.status_code == 400
    assert r.json() == {"detail": "network namespace nope does not exist"}
    r = client.post("/v1/attach", json={"netns": "x"})
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and "network" in r.json()["detail"]
    r = client.post("/v1/attach", json={"netns": "x", "network": "b", "ip": "300.1.1.1"})
    assert r.status_code == 422
    assert client.get("/healthz").json()["status"] == "ok"


def test_local_api_attach_and_detach():
    client = TestClient(create_app(Attacher(HOST, FakeController(), FakeOps())))
    r = client.post("/v1/attach", json={"netns": "ns1", "network": "blue", "name": "web"})
    assert r.status_code == 200, r.text
    assert r.json()["ip"] == "10.1.0.5"
    r = client.post("/v1/detach", json={"name": "web"})
    assert r.json() == {"detached": "web"}
