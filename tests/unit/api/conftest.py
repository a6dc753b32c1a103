"""Fixtures of the API tests: the policy lab (an app with admin, agent and read-only
tokens; hosts h1 and h2; networks web, api, db; five containers).  A test module that
defines a fixture of the same name uses its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.desired.events import Change
from tests.unit.api.support import ADMIN, AGENT, READONLY, bearer, extra_routers, make_ctx


@pytest.fixture
def events() -> list[Change]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, events: list[Change]) -> Iterator[ApiContext]:
    c = make_ctx(tmp_path / "policy-api.db", events)
    c.token, c.agent_token, c.readonly_token = ADMIN, AGENT, READONLY
    yield c
    c.inventory.store.close()


@pytest.fixture
def app(ctx: ApiContext) -> Any:
    return create_app(ctx, extra_routers())


@pytest.fixture
def admin(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers=bearer(ADMIN)) as c:
        yield c


@pytest.fixture
def lab(admin: TestClient, ctx: ApiContext) -> TestClient:
    inv = ctx.inventory
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("api", "10.2.0.0/24")
    inv.create_network("db", "10.3.0.0/24")
    inv.add_endpoint("w1", "web", "h1")  # 10.1.0.2
    inv.add_endpoint("w2", "web", "h2")  # 10.1.0.3
    inv.add_endpoint("w3", "web", "h1")  # 10.1.0.4
    inv.add_endpoint("a1", "api", "h2")  # 10.2.0.2
    inv.add_endpoint("d1", "db", "h1")  # 10.3.0.2
    return admin
