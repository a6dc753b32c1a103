"""The hub's streams through the real stream endpoint (controller/api/routes/stream.py):
a second stream of the same host replaces the first, which is closed with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from controller.agents.hub import AgentHub
from controller.agents.messages import CLOSE_REPLACED
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
