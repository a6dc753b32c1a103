"""GET /readyz (controller/api/readiness.py): ready only when the store answers, the
replica has a role, the registered switches are connected (within the wait after the
start), its own are mastered and their agents stream."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from controller.api import readiness
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.base import StoreUnavailable
from controller.store.sqlite import SqliteStore


class Hub:
    def __init__(self) -> None:
        self.streaming: list[str] = []

    def connected(self) -> list[str]:
        return list(self.streaming)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def served(tmp_path: Path, roles: Roles, clock: Clock | None = None,
           ) -> tuple[TestClient, ApiContext, Hub]:
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    for name, dpid in (("h1", 1), ("h2", 2)):
        inventory.index.put_host(Host(name=name, address=ipaddress.IPv4Address(
            f"198.18.0.{dpid}"), dpid=dpid))
    hub = Hub()
    runtime = DatapathRuntime(inventory.index, roles)
    ctx = ApiContext(inventory=inventory, token="t", runtime=runtime, openflow_host="0.0.0.0",
                     openflow_port=6653, roles=roles, hub=hub,  # type: ignore[arg-type]
                     clock=clock or Clock(), started=1000.0, ready_wait=30.0)
    app = create_app(ctx)
    app.include_router(readiness.router)
    return TestClient(app), ctx, hub


def answer(client: TestClient) -> tuple[int, dict[str, Any]]:
    r = client.get("/readyz")  # no token
    return r.status_code, r.json()["checks"]


def test_ready_once_the_switches_are_mastered_and_the_agents_stream(tmp_path: Path) -> None:
    roles = Roles()
    client, _, hub = served(tmp_path, roles)
    status, checks = answer(client)
    assert status == 503 and checks["role"] == "neither leading nor a member"
    roles.set_master(1)
    status, checks = answer(client)  # just started: the registered switches come back
    assert status == 503
    assert checks["switches"] == ("2 registered switch(es) not connected yet "
                                  "(waiting since the start)")
    roles.switch_seen(1, True)
    roles.switch_seen(2, True)
    status, checks = answer(client)
    assert status == 503 and checks["switches"] == "2 connected switch(es) not yet mastered"
    roles.confirm_master(1, True)
    roles.confirm_master(2, True)
    status, checks = answer(client)
    assert status == 503 and checks["agents"] == "2 agent(s) not streaming"
    hub.streaming = ["h1", "h2"]
    status, checks = answer(client)
    assert status == 200 and set(checks.values()) == {"ok"}
    assert client.get("/healthz").status_code == 200


def test_a_member_waits_only_for_its_own_switches(tmp_path: Path) -> None:
    roles = Roles("c0")
    roles.set_membership(True)
    roles.set_assignment({1: "c0", 2: "c1"}, 4)
    client, ctx, hub = served(tmp_path, roles)

    class Lease:
        held = False  # c1 leads

    class Masters:
        is_member = True
        leadership = Lease()

    ctx.masters = Masters()  # type: ignore[assignment]
    roles.switch_seen(1, True)
    roles.switch_seen(2, True)  # c1's: a slave connection here
    roles.confirm_master(1, True)
    hub.streaming = ["h1"]
    assert answer(client)[0] == 200


def test_not_ready_without_the_store(tmp_path: Path) -> None:
    roles = Roles()
    roles.set_master(1)
    client, ctx, _ = served(tmp_path, roles)

    def unavailable() -> int:
        raise StoreUnavailable("no quorum")

    ctx.inventory.store.revision = unavailable  # type: ignore[method-assign]
    status, checks = answer(client)
    assert status == 503 and checks["store"] == "unreachable: StoreUnavailable"


def test_the_wait_for_absent_switches_and_silent_agents_is_bounded(tmp_path: Path) -> None:
    """A host that is down holds a restarted replica back for `ready_wait` seconds,
    not for good; it stays counted.  A connected switch not yet mastered holds it
    back at any time."""
    roles = Roles()
    roles.set_master(1)
    clock = Clock()
    client, _, hub = served(tmp_path, roles, clock)
    roles.switch_seen(1, True)
    roles.confirm_master(1, True)  # h2's switch never comes back
    clock.now += 29.0
    status, checks = answer(client)
    assert status == 503 and checks["switches"].startswith("1 registered switch(es)")
    assert checks["agents"] == "1 agent(s) not streaming"
    clock.now += 2.0  # past the wait
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["counts"] == {
        "switches_expected": 2, "switches_connected": 1, "switches_absent": 1,
        "switches_to_master": 1, "switches_unconfirmed": 0, "agents_expected": 1,
        "agents_silent": 1}
    assert "h1" not in r.text and "h2" not in r.text  # counts only, never a host
    roles.switch_seen(2, True)  # it comes back: to be mastered before ready again
    status, checks = answer(client)
    assert status == 503 and checks["switches"] == "1 connected switch(es) not yet mastered"
    roles.confirm_master(2, True)
    hub.streaming = ["h1", "h2"]
    assert answer(client)[0] == 200
