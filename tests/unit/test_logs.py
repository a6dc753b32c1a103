"""Logging (controller/logs.py): the agent's periodic requests to the controller log
nothing at INFO, neither on the agent (httpx) nor on the controller (uvicorn's access
log), while a change still logs its line; at DEBUG both show.

A real uvicorn server on loopback answers the agent's real client, so a change of
either library's logging (a request logged at another level or under another name,
the access log's arguments) shows here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.logs import ACCESS_LOGGER, REQUEST_LOGGERS, configure_logging, quiet_access_log
from hostnet.agent.client import ControllerClient
from tests.unit.api.support import TOKEN, make_ctx
from tests.unit.apiserver import serve

WATCHED = ("", *REQUEST_LOGGERS, ACCESS_LOGGER)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int) -> list[tuple[str, str]]:
        """(logger, message) of the records at `level`."""
        return [(r.name, r.getMessage()) for r in self.records if r.levelno == level]


@pytest.fixture
def collect() -> Iterator[Collect]:
    """Records of the request loggers and of the access log (which does not
    propagate); every level and filter touched is put back afterwards."""
    loggers = [logging.getLogger(name) for name in WATCHED]
    saved = [(lg, lg.level, list(lg.filters)) for lg in loggers]
    handler = Collect()
    for lg in loggers[1:]:
        lg.addHandler(handler)
    yield handler
    for lg, level, filters in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)
        lg.filters[:] = filters


def _sync_then_change(tmp_path: Path, level: str, collect: Collect) -> None:
    """What the agent does: its network sync's GET twice, then one change."""
    ctx = make_ctx(tmp_path / f"{level}.db", [])
    with serve(ctx, log_level=level, access_log=True) as url:
        quiet_access_log()  # as controller/main.py does after uvicorn configured its loggers
        logging.getLogger(ACCESS_LOGGER).addHandler(collect)  # uvicorn replaced its handlers
        configure_logging(level)  # as both daemons do at start

        async def agent() -> None:
            client = ControllerClient(url, TOKEN)
            try:
                for _ in range(2):
                    assert await client.list_networks() == []
                await client.create_network("web", "10.1.0.0/24")
            finally:
                await client.aclose()

        asyncio.run(agent())
    ctx.inventory.store.close()


def test_periodic_requests_log_nothing_at_info(tmp_path: Path, collect: Collect) -> None:
    _sync_then_change(tmp_path, "info", collect)
    info = collect.lines(logging.INFO)
    # the change: one access line on the controller; the agent's own line for it is
    # at debug too (its attach/route logs say what happened)
    assert [m for n, m in info if n == ACCESS_LOGGER and "POST /api/v1/networks" in m] != []
    assert [(n, m) for n, m in info if "GET" in m] == []
    assert [n for n, _ in info if n.startswith(REQUEST_LOGGERS)] == []
    assert collect.lines(logging.DEBUG) == []


def test_at_debug_every_request_shows(tmp_path: Path, collect: Collect) -> None:
    _sync_then_change(tmp_path, "debug", collect)
    reads = [m for n, m in collect.lines(logging.DEBUG)
             if n == ACCESS_LOGGER and "GET /api/v1/networks" in m]
    assert len(reads) == 2
    requests = [
        r.getMessage() for r in collect.records if r.name == "httpx"]
    assert sum("GET" in m for m in requests) == 2


def test_without_the_setup_httpx_would_log_each_request_at_info(
    tmp_path: Path, collect: Collect
) -> None:
    """The check above is not vacuous: httpx's own default is a line per request."""
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)
    ctx = make_ctx(tmp_path / "raw.db", [])
    with serve(ctx) as url:
        async def agent() -> None:
            client = ControllerClient(url, TOKEN)
            try:
                await client.list_networks()
            finally:
                await client.aclose()

        asyncio.run(agent())
    ctx.inventory.store.close()
    assert [n for n, m in collect.lines(logging.INFO) if "GET" in m] == ["httpx"]


def test_an_unknown_level_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")
