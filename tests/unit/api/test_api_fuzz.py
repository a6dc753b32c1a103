"""Fuzz the REST API with schemathesis against its own OpenAPI schema, in-process.

Every operation gets valid and invalid inputs (bounded, deterministic, so the run
stays short); no input may give a 5xx, and every 4xx must be `{"detail": "..."}`
naming the offending fields when request validation refused it.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from fastapi import APIRouter
from schemathesis import GenerationMode

from controller.api.app import create_app
from controller.api.auth import RequireToken
from controller.api.deps import ApiContext, Ctx
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from tests.unit.fakes import FakeRuntime

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Generated inputs per operation and generation mode, on top of schemathesis's coverage
# phase (the boundary and wrong-type cases it derives from the schema, however many).
# 10 instead of 20 halves the run (4 s less): of five faults injected into the inventory
# (a 5xx on some valid inputs), 10 found the same three as 20, on the same operations.
MAX_EXAMPLES = 10


def _routes_router() -> APIRouter:
    router = APIRouter(dependencies=[RequireToken])

    @router.get("/routes")
    def list_routes(ctx: Ctx, host: str | None = None) -> list[dict[str, Any]]:
        return ctx.runtime.routes(host)

    return router


def _app() -> Any:
    inventory = Inventory(SqliteStore(":memory:"), lambda _c: None)
    # Some state, so that generated names sometimes hit something real.
    inventory.register_host("h1", "198.18.0.11")
    inventory.register_host("h2", "198.18.0.12")
    inventory.create_network("web", "10.1.0.0/24")
    inventory.create_network("api", "10.2.0.0/24")
    inventory.add_endpoint("c1", "web", "h1")
    inventory.add_endpoint("c2", "api", "h2")
    inventory.create_group("g", ["web", "api"])
    inventory.add_rule("network", "web", "allow", "cidr", "192.0.2.0/24", "tcp", ["80"])
    inventory.set_pair_policy("c1", "c2", "deny")
    inventory.publish_port("c1", 8080, 80)
    ctx = ApiContext(
        inventory=inventory,
        token=TOKEN,
        runtime=FakeRuntime(),
        openflow_host="0.0.0.0",
        openflow_port=6653,
        readonly_token="fuzz-ro",
        agent_token="fuzz-agent",
    )
    return create_app(ctx, [_routes_router()])


# No example database: nothing written into the work tree, every run the same.
hypothesis.settings.register_profile("daolinet-fuzz", database=None)
hypothesis.settings.load_profile("daolinet-fuzz")

schema = schemathesis.openapi.from_asgi("/openapi.json", _app())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    database="none",
)


def _check_error(case: Any, status: int, body: Any) -> None:
    where = f"{case.method} {case.formatted_path}"
    assert isinstance(body, dict), f"{where}: {status} body is not an object: {body!r}"
    detail = body.get("detail")
    assert isinstance(detail, str), f"{where}: {status} detail is not a string: {body!r}"
    assert detail.strip(), f"{where}: {status} with an empty detail"
    for err in body.get("errors", []):
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid" or loc == ["body"]:
            continue
        field = loc[-1] if loc else ""
        assert field in detail, f"{where}: {status} detail {detail!r} does not name {field!r}"


@schema.parametrize()
def test_no_input_gives_a_5xx(case: Any) -> None:
    response = case.call(headers=AUTH)
    status = response.status_code
    assert status < 500, (
        f"{case.method} {case.formatted_path} -> {status}: {response.text[:300]}"
    )
    if 400 <= status < 500:
        _check_error(case, status, response.json())
