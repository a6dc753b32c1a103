"""A real HTTP server for the API on loopback, for the CLI tests (daolictl speaks HTTP)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from fastapi import APIRouter

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.main import api_config
from controller.trust.tls import ServerContext


@contextmanager
def serve(
    ctx: ApiContext, routers: Sequence[APIRouter] = (), tls: ServerContext | None = None, *,
    log_level: str = "warning", access_log: bool = False, pages: Sequence[APIRouter] = (),
) -> Iterator[str]:
    """Serve the API of `ctx` on a free 127.0.0.1 port; yields its base URL.  With
    `tls`, over HTTPS as the controller serves it (controller/main.py, `api_config`).
    `pages`: routers served outside /api/v1 (the live map's page)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(ctx, list(routers))
    for router in pages:
        app.include_router(router)
    config = api_config(app, "127.0.0.1", port, log_level, tls)
    config.lifespan, config.access_log = "off", access_log
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn died"
            time.sleep(0.02)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
