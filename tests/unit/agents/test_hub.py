"""The hub's streams through the real stream endpoint (controller/api/routes/stream.py):
a second stream of the same host replaces the first, which is closed with a reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.agents.hub import AgentHub, Session
from controller.agents.messages import CLOSE_REPLACED
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from tests.unit.api.support import hub_served

TOKEN = "hub-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, AgentHub]]:
    """An app leading (the only controller) with hosts h1 and h2 and a real hub."""
    with hub_served(tmp_path / "db", TOKEN) as (client, hub, _):
        yield client, hub


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


def test_each_agent_gets_its_own_names_table_when_it_changes(tmp_path: Path) -> None:
    """names_changed: every connected agent gets its host's table (its containers
    only), again only when it differs from the last one it got."""
    changes: list[Change] = []
    inventory = Inventory(SqliteStore(tmp_path / "db"), changes.append)
    for name, address in (("h1", "198.18.0.11"), ("h2", "198.18.0.12")):
        inventory.register_host(name, address)
    inventory.create_network("web", "10.1.0.0/24")
    w1 = inventory.add_endpoint("w1", "web", "h1")
    w2 = inventory.add_endpoint("w2", "web", "h2")
    roles = Roles()
    roles.set_master(1)
    hub = AgentHub(DatapathRuntime(inventory.index, roles))

    async def scenario() -> list[list[dict[str, Any]]]:
        hub._loop = asyncio.get_running_loop()
        sessions = [Session(h, asyncio.Queue(), ready=True) for h in ("h1", "h2")]
        hub._sessions = {s.host: s for s in sessions}
        rounds = []
        for change in (None, None, "alias"):
            if change == "alias":
                inventory.update_endpoint("w2", aliases=["api"])
            hub.names_changed(changes[-1])
            await asyncio.sleep(0)
            rounds.append([s.queue.get_nowait() if not s.queue.empty() else {}
                           for s in sessions])
        return rounds

    first, unchanged, renamed = asyncio.run(scenario())
    assert [m["type"] for m in first] == ["names", "names"]
    assert [t["source"] for t in first[0]["tables"]] == [str(w1.ip)]  # h1's only
    assert [t["source"] for t in first[1]["tables"]] == [str(w2.ip)]
    assert {p["ip"]: p["names"] for p in first[0]["tables"][0]["peers"]} == {
        str(w1.ip): ["w1"], str(w2.ip): ["w2"]}
    assert unchanged == [{}, {}]  # nothing differs: nothing sent
    assert renamed[0]["tables"][0]["peers"][1]["names"] == ["w2", "api"]
    assert renamed[1]["tables"][0]["peers"][1]["names"] == ["w2", "api"]
    inventory.store.close()
