"""What the daolictl tests share: a real API server on 127.0.0.1 (uvicorn in a fixture
thread) over a SQLite inventory, with a fake runtime whose live routes are ROUTES."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from controller.api.auth import RequireToken
from controller.api.deps import ApiContext, Ctx
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from tests.unit import fakes
from tests.unit.apiserver import serve

ROUTES = [
    {
        "src": "10.1.0.2",
        "dst": "10.1.0.3",
        "src_host": "h1",
        "dst_host": "h2",
        "path": ["h1", "h2"],
        "age": 125.0,
        "idle": 2.25,
    }
]


class FakeRuntime(fakes.FakeRuntime):
    """Leading by default, with the ROUTES of this module."""

    def __init__(self, master: int | None = 1) -> None:
        super().__init__(master, ROUTES)


def routes_router() -> APIRouter:
    router = APIRouter(dependencies=[RequireToken])

    @router.get("/routes")
    def list_routes(ctx: Ctx, host: str | None = None) -> list[dict[str, Any]]:
        return ctx.runtime.routes(host)

    return router


@dataclass
class Api:
    url: str
    ctx: ApiContext


@contextmanager
def served_api(db: Path, token: str, readonly_token: str = "") -> Iterator[Api]:
    """The API on a fresh inventory in `db`, served until the block ends."""
    store = SqliteStore(db)
    ctx = ApiContext(
        inventory=Inventory(store, lambda _c: None),
        token=token,
        runtime=FakeRuntime(),
        openflow_host="0.0.0.0",
        openflow_port=6653,
        readonly_token=readonly_token,
    )
    with serve(ctx, [routes_router()]) as url:
        yield Api(url=url, ctx=ctx)
    store.close()
