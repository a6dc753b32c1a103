"""Request-body limits before parsing (controller/api/limits.py): the middleware on its
own (how much of a body it reads) and in the API app (what a client sees)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.limits import BodyLimits, LimitBodies
from tests.unit.api.support import ADMIN, READONLY, bearer, extra_routers

CHUNK = b"x" * 4096


class Peer:
    """A client's side of one ASGI request: a body sent in chunks (counted as the
    app reads them) and the response received."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.read += 1
        return {"type": "http.request", "body": CHUNK, "more_body": self.read < self.chunks}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def detail(self) -> str:
        return str(json.loads(self.sent[1]["body"])["detail"])

    @property
    def headers(self) -> Headers:
        return Headers(raw=self.sent[0]["headers"])


async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that reads the whole body, then answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def scope(headers: dict[str, str], path: str = "/api/v1/networks") -> Scope:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": "POST", "path": path, "headers": raw}


def run(middleware: LimitBodies, headers: dict[str, str], chunks: int,
        path: str = "/api/v1/networks") -> Peer:
    peer = Peer(chunks)
    asyncio.run(middleware(scope(headers, path), peer.receive, peer.send))
    return peer


def limit(cap: int = 10 * len(CHUNK), bulk: int = 100 * len(CHUNK)) -> LimitBodies:
    return LimitBodies(reading_app, limits=BodyLimits.of(cap, bulk),
                       unauthenticated=lambda s: None
                       if Headers(scope=s).get("authorization") == "Bearer ok"
                       else (401, "invalid token"))


OK = {"Authorization": "Bearer ok"}


def test_an_unauthenticated_body_is_refused_before_one_byte_is_read() -> None:
    for headers in ({"Content-Length": str(100 * 2**20)}, {"Transfer-Encoding": "chunked"},
                    {"Content-Length": "10", "Authorization": "Bearer wrong"}):
        peer = run(limit(), headers, chunks=25_000)
        assert peer.read == 0
        assert peer.status == 401
        assert peer.detail == "invalid token"
        assert peer.headers["connection"] == "close"
        assert peer.headers["www-authenticate"] == "Bearer"


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    peer = run(limit(), {**OK, "Content-Length": str(100 * 2**20)}, chunks=25_000)
    assert peer.read == 0
    assert peer.status == 413
    assert peer.detail == ("request body larger than the limit of 40960 bytes for POST "
                           "/api/v1/networks (controller option --api-max-body)")
    assert peer.headers["connection"] == "close"


def test_a_chunked_body_is_counted_and_cut_at_the_cap() -> None:
    peer = run(limit(), {**OK, "Transfer-Encoding": "chunked"}, chunks=25_000)
    assert peer.read == 11  # one chunk past the cap of ten, not the 25,000 sent
    assert peer.status == 413
    assert "limit of 40960 bytes" in peer.detail
    assert [m["type"] for m in peer.sent] == ["http.response.start", "http.response.body"]


def test_bodies_within_the_cap_reach_the_route() -> None:
    for headers in ({**OK, "Transfer-Encoding": "chunked"},
                    {**OK, "Content-Length": str(10 * len(CHUNK))}):
        peer = run(limit(), headers, chunks=10)
        assert peer.status == 200
        assert peer.sent[1]["body"] == str(10 * len(CHUNK)).encode()


def test_requests_without_a_body_pass_untouched() -> None:
    """No credential needed here: the route's own check answers (GET /healthz, a 401
    of the route naming what is missing)."""
    peer = run(limit(), {}, chunks=1)
    assert peer.status == 200


def test_the_bulk_route_has_its_own_cap() -> None:
    path = "/api/v1/replicas/needs"
    peer = run(limit(), {**OK, "Transfer-Encoding": "chunked"}, chunks=50, path=path)
    assert peer.status == 200
    peer = run(limit(), {**OK, "Content-Length": str(101 * len(CHUNK))}, chunks=101, path=path)
    assert peer.status == 413
    assert peer.detail.endswith("for POST /api/v1/replicas/needs (controller option "
                                "--api-max-bulk-body)")


# --- in the API app ------------------------------------------------------------------


@contextmanager
def body_limited_client(ctx: ApiContext, cap: int) -> Iterator[TestClient]:
    app = create_app(ctx, extra_routers(), body_limits=BodyLimits.of(cap, cap * 4))
    with TestClient(app) as client:
        yield client


def test_the_api_refuses_a_large_body_naming_the_limit(ctx: ApiContext) -> None:
    with body_limited_client(ctx, 2048) as client:
        big = {"name": "web", "subnet": "10.1.0.0/24", "pad": "x" * 4096}
        answer = client.post("/api/v1/networks", json=big, headers=bearer(ADMIN))
        assert answer.status_code == 413
        assert "limit of 2048 bytes" in answer.json()["detail"]

        def chunked() -> Iterator[bytes]:
            yield b'{"name": "web", "subnet": "10.1.0.0/24", "pad": "'
            for _ in range(10):
                yield b"x" * 1024
            yield b'"}'

        answer = client.post("/api/v1/networks", content=chunked(), headers=bearer(ADMIN))
        assert answer.status_code == 413
        assert "limit of 2048 bytes" in answer.json()["detail"]
        assert ctx.inventory.index.networks() == []


def test_the_api_still_takes_bodies_within_the_cap(ctx: ApiContext) -> None:
    with body_limited_client(ctx, 2048) as client:
        answer = client.post("/api/v1/networks", json={"name": "web", "subnet": "10.1.0.0/24"},
                             headers=bearer(ADMIN))
        assert answer.status_code == 201, answer.text


def test_the_api_asks_for_a_token_before_reading_a_body(ctx: ApiContext) -> None:
    with body_limited_client(ctx, 2048) as client:
        answer = client.post("/api/v1/networks", content=b"{" * 100_000,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 401
        assert answer.json()["detail"] == "missing bearer token"
        assert answer.headers["www-authenticate"] == "Bearer"
        # a valid token without the role still gets the route's 403 (read, then refused)
        answer = client.post("/api/v1/networks", json={"name": "web", "subnet": "10.1.0.0/24"},
                             headers=bearer(READONLY))
        assert answer.status_code == 403
        # no body: the route's own message
        assert client.get("/api/v1/networks").json()["detail"] == "missing bearer token"


def test_any_json_is_refused_past_the_cap_not_parsed(ctx: ApiContext) -> None:
    """A deeply nested body (costly to parse) past the cap never reaches the parser."""
    with body_limited_client(ctx, 2048) as client:
        nested: Any = "[" * 5000 + "]" * 5000
        answer = client.post("/api/v1/groups", content=nested.encode(),
                             headers={**bearer(ADMIN), "Content-Type": "application/json"})
        assert answer.status_code == 413
