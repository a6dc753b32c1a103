"""The hub's streams through the real stream endpoint (controller/api/routes/stream.py):
a second stream of the same host replaces the first, which is closed with a reason."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.agents.hub import AgentHub
from controller.agents.messages import CLOSE_REPLACED
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.routes import stream
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.sqlite import SqliteStore

TOKEN = "hub-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, AgentHub]]:
    """An app leading (the only controller) with hosts h1 and h2 and a real hub."""
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    for name, dpid in (("h1", 1), ("h2", 2)):
        inventory.index.put_host(Host(name=name, address=ipaddress.IPv4Address(
            f"198.18.0.{dpid}"), dpid=dpid))
    roles = Roles()
    roles.set_master(1)
    runtime = DatapathRuntime(inventory.index, roles, agents=AgentHub)
    hub = runtime.agents
    assert isinstance(hub, AgentHub)
    ctx = ApiContext(inventory=inventory, token=TOKEN, runtime=runtime,
                     openflow_host="0.0.0.0", openflow_port=6653, roles=roles, hub=hub)
    with TestClient(create_app(ctx, [stream.router])) as client:
        yield client, hub
    inventory.store.close()


def test_a_second_stream_of_a_host_closes_the_first_with_a_reason(
    served: tuple[TestClient, AgentHub], caplog: pytest.LogCaptureFixture
) -> None:
    client, hub = served
    with client.websocket_connect("/api/v1/hosts/h1/stream", headers=AUTH) as first:
        with client.websocket_connect("/api/v1/hosts/h1/stream", headers=AUTH) as second:
            with pytest.raises(WebSocketDisconnect) as closed:
                first.receive_json()
            assert closed.value.code == CLOSE_REPLACED
            assert closed.value.reason.startswith("replaced by a newer stream of host h1 from ")
            # the newer one is the host's session; another host's stream is untouched
            with client.websocket_connect("/api/v1/hosts/h2/stream", headers=AUTH):
                session = hub._sessions["h1"]
                assert hub._sessions["h2"] is not session
                second.send_json({"type": "ack", "seq": 99})  # still served: no error
            assert hub._sessions["h1"] is session
        assert "h1" not in hub._sessions  # the newer one left: nothing is orphaned
    assert any("a newer stream" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)


def test_one_stream_per_host_is_never_closed_by_the_hub(
    served: tuple[TestClient, AgentHub]
) -> None:
    """Streams of different hosts, one after the other of the same host: none is
    replaced (the reconnect of an agent whose stream had ended is an ordinary open)."""
    client, hub = served
    for _ in range(2):
        with client.websocket_connect("/api/v1/hosts/h1/stream", headers=AUTH) as ws:
            ws.send_json({"type": "ack", "seq": 1})
            assert "h1" in hub._sessions
        assert "h1" not in hub._sessions
