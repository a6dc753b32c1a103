"""DELETE /api/v1/hosts/{name}: refused while the host has containers (unless
forced), admin only, and everything of the host goes: its records, its peer in the
mesh every other agent gets, its agent's stream.

The app runs on a real DatapathRuntime whose agent link records what it is told
(the hub's own part, closing the stream, is tested on the real hub below)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.agents.messages import CLOSE_HOST_REMOVED
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cluster.roles import Roles
from controller.datapath.effects import KernelRouteDelta
from controller.datapath.runtime import DatapathRuntime
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.desired.models import Host, NatRule
from controller.store.sqlite import SqliteStore
from tests.unit.api.support import ADMIN, AGENT, READONLY, bearer, hub_served

KEY = "k" * 42 + "A="


class RecordingLink:
    """The runtime's agent link: what the hub would send and close."""

    def __init__(self, runtime: DatapathRuntime) -> None:
        self.meshes: list[list[str]] = []
        self.removed: list[str] = []

    def send_delta(self, delta: KernelRouteDelta) -> None:
        pass

    def host_synced(self, host: str) -> None:
        pass

    def send_nat(self, host: str, rules: list[NatRule]) -> None:
        pass

    def send_mesh(self, hosts: list[Host]) -> None:
        self.meshes.append([h.name for h in hosts])

    def names_changed(self) -> None:
        pass

    def drop_all(self) -> None:
        pass

    def drop_hosts(self, hosts: set[str]) -> None:
        pass

    def host_removed(self, host: str) -> None:
        self.removed.append(host)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Inventory, RecordingLink, list[Change]]]:
    """Three hosts of two sites with WireGuard; w1, w2 on h1, w3 on h2."""
    announced: list[Change] = []
    runtime: list[DatapathRuntime] = []

    def on_change(change: Change) -> None:
        announced.append(change)
        runtime[0].on_change(change)

    inventory = Inventory(SqliteStore(tmp_path / "db"), on_change)
    roles = Roles()
    roles.set_master(1)
    runtime.append(DatapathRuntime(inventory.index, roles, agents=RecordingLink))
    link = runtime[0].agents
    assert isinstance(link, RecordingLink)
    for i, site in ((1, "a"), (2, "a"), (3, "b")):
        inventory.register_host(f"h{i}", f"198.18.{i}.1", site, wg_public_key=KEY[:-3] + f"{i}A=",
                                wg_endpoint=f"198.18.{i}.1:51820",
                                tunnel_address=f"198.19.0.{i}")
    inventory.create_network("web", "10.1.0.0/24")
    inventory.add_endpoint("w1", "web", "h1")
    inventory.add_endpoint("w2", "web", "h1")
    inventory.add_endpoint("w3", "web", "h2")
    ctx = ApiContext(inventory=inventory, token=ADMIN, agent_token=AGENT,
                     readonly_token=READONLY, runtime=runtime[0], openflow_host="0.0.0.0",
                     openflow_port=6653, roles=roles)
    link.meshes.clear()
    announced.clear()
    with TestClient(create_app(ctx), headers=bearer(ADMIN)) as client:
        yield client, inventory, link, announced
    inventory.store.close()


def test_an_unknown_host_is_404(served) -> None:
    client, *_ = served
    r = client.delete("/api/v1/hosts/nope")
    assert r.status_code == 404 and r.json()["detail"] == "host nope not found"


def test_a_host_with_containers_is_refused_naming_them(served) -> None:
    client, inventory, link, announced = served
    r = client.delete("/api/v1/hosts/h1")
    assert r.status_code == 409
    assert r.json()["detail"] == (
        "host h1 still has 2 container(s): w1, w2; remove them first, or force the "
        "removal (their endpoints go too)"
    )
    assert inventory.host("h1").name == "h1" and len(inventory.endpoints(host="h1")) == 2
    assert announced == [] and link.meshes == [] and link.removed == []
    assert client.delete("/api/v1/hosts/h1?force=false").status_code == 409


def test_a_host_without_containers_goes_with_its_mesh_peer(served) -> None:
    client, inventory, link, _ = served
    h3 = inventory.host("h3")
    r = client.delete("/api/v1/hosts/h3")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["dpid"], body["removed_containers"]) == ("h3", h3.dpid, [])
    assert client.get("/api/v1/hosts/h3").status_code == 404
    assert [h["name"] for h in client.get("/api/v1/hosts").json()] == ["h1", "h2"]
    # every other agent gets the mesh without it; its own stream is closed
    assert link.meshes == [["h1", "h2"]] and link.removed == ["h3"]
    assert [h.name for h in inventory.index.view().hosts()] == ["h1", "h2"]
    # registered again: a new host, with a new switch
    again = client.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.3.1"})
    assert again.status_code == 200 and again.json()["dpid"] not in (1, 2, h3.dpid)


def test_a_forced_removal_takes_the_containers_along(served) -> None:
    client, inventory, link, announced = served
    r = client.delete("/api/v1/hosts/h1", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["removed_containers"] == ["w1", "w2"]
    assert [e.name for e in inventory.endpoints()] == ["w3"]
    assert client.get("/api/v1/containers/w1").status_code == 404
    assert [type(c).__name__ for c in announced] == [
        "EndpointRemoved", "EndpointRemoved", "HostRemoved"]
    assert link.meshes == [["h2", "h3"]] and link.removed == ["h1"]


@pytest.mark.parametrize(("token", "role"), [(AGENT, "agent"), (READONLY, "read-only")])
def test_only_the_admin_token_removes_a_host(served, token: str, role: str) -> None:
    client, inventory, link, _ = served
    r = client.delete("/api/v1/hosts/h3", headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"the {role} token may not ")
    assert "DELETE /api/v1/hosts/h3" in r.json()["detail"]
    assert inventory.host("h3").name == "h3" and link.removed == []
    # the same tokens still read it, and the agent token still registers its host
    assert client.get("/api/v1/hosts/h3", headers=bearer(token)).status_code == 200
    assert client.post("/api/v1/hosts", json={"name": "h3", "address": "198.18.3.1"},
                       headers=bearer(AGENT)).status_code == 200
    assert client.delete("/api/v1/hosts/h3").status_code == 200  # the admin token does


def test_the_hub_closes_a_removed_hosts_stream_with_its_own_code(tmp_path: Path) -> None:
    """The real hub and stream route: the removed host's stream ends with
    CLOSE_HOST_REMOVED (its agent then stops, hostnet/agent/stream.py); another
    host's stream stays; the removed host's next stream is refused as unknown."""
    with hub_served(tmp_path / "db", ADMIN) as (client, hub, inventory):
        url = "/api/v1/hosts/{}/stream"
        with client.websocket_connect(url.format("h1"), headers=bearer(ADMIN)) as ws1, \
                client.websocket_connect(url.format("h2"), headers=bearer(ADMIN)):
            inventory.index.drop_host("h1")
            hub.host_removed("h1")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws1.receive_json()
            assert closed.value.code == CLOSE_HOST_REMOVED
            assert closed.value.reason == "host h1 was removed from the controller"
            assert hub.connected() == [] and "h2" in hub._sessions
        # refused after the handshake, so that the close frame carries the reason
        with (pytest.raises(WebSocketDisconnect) as refused,
              client.websocket_connect(url.format("h1"), headers=bearer(ADMIN)) as ws):
            ws.receive_json()
        assert (refused.value.code, refused.value.reason) == (4404, "host h1 is not registered")
