"""What the API tests share: a fake runtime with fixed live routes, stand-ins for the
routers other modules provide, an API context on a SQLite inventory, and the stream
route served with a real agent hub."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.testclient import TestClient

from controller.agents.hub import AgentHub
from controller.api.app import create_app
from controller.api.auth import RequireToken, check_token
from controller.api.deps import ApiContext, Ctx
from controller.api.routes import stream
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.sqlite import SqliteStore
from tests.unit import fakes

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ROUTES = [
    {
        "src": "10.1.0.2",
        "dst": "10.1.0.3",
        "src_host": "h1",
        "dst_host": "h2",
        "path": ["h1", "h2"],
        "age": 12.5,
        "idle": 0.5,
    },
    {
        "src": "10.1.0.4",
        "dst": "10.1.0.5",
        "src_host": "h2",
        "dst_host": "h2",
        "path": ["h2"],
        "age": 3.0,
        "idle": 1.0,
    },
]


class FakeRuntime(fakes.FakeRuntime):
    """Leading by default, with the ROUTES of this module."""

    def __init__(self, master: int | None = 1) -> None:
        super().__init__(master, ROUTES)


def extra_routers() -> list[APIRouter]:
    """Stand-ins for the routes and stream routers other modules provide."""
    routes = APIRouter(dependencies=[RequireToken])

    @routes.get("/routes")
    def list_routes(ctx: Ctx, host: str | None = None) -> list[dict[str, Any]]:
        return ctx.runtime.routes(host)

    stream = APIRouter()

    @stream.websocket("/hosts/{name}/stream")
    async def host_stream(websocket: WebSocket, name: str, ctx: Ctx) -> None:
        if not check_token(ctx, websocket.headers.get("authorization")):
            await websocket.close(code=4401, reason="invalid or missing bearer token")
            return
        await websocket.accept()
        await websocket.send_json({"type": "snapshot", "seq": 0, "routes": [], "host": name})
        await websocket.close()

    return [routes, stream]


def make_ctx(db: Path, events: list[Change], openflow_host: str = "0.0.0.0") -> ApiContext:
    inventory = Inventory(SqliteStore(db), events.append)
    return ApiContext(
        inventory=inventory,
        token=TOKEN,
        runtime=FakeRuntime(),
        openflow_host=openflow_host,
        openflow_port=6653,
    )



ADMIN, AGENT, READONLY = "admin-token", "agent-token", "readonly-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def hub_served(db: Path, token: str) -> Iterator[tuple[TestClient, AgentHub, Inventory]]:
    """The real stream route and agent hub of a leading (only) controller, with hosts
    h1 and h2 registered, served with `token` as the admin token."""
    inventory = Inventory(SqliteStore(db), lambda change: None)
    for name, dpid in (("h1", 1), ("h2", 2)):
        inventory.index.put_host(Host(name=name, address=ipaddress.IPv4Address(
            f"198.18.0.{dpid}"), dpid=dpid))
    roles = Roles()
    roles.set_master(1)
    runtime = DatapathRuntime(inventory.index, roles, agents=AgentHub)
    hub = runtime.agents
    assert isinstance(hub, AgentHub)
    ctx = ApiContext(inventory=inventory, token=token, runtime=runtime,
                     openflow_host="0.0.0.0", openflow_port=6653, roles=roles, hub=hub)
    with TestClient(create_app(ctx, [stream.router])) as client:
        yield client, hub, inventory
    inventory.store.close()
