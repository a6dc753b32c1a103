"""The other replicas' connection logs, followed for one map stream.

With masters spread over replicas each replica logs what its own switches send in
(docs/architecture.md, "Connection log"), so a first packet through another
replica's switch is logged there, not here.  A stream asks every other member for
the entries after its cursor for that member (`GET /replicas/connections?after=`,
one cursor per member: the members' clocks may differ) every MEMBER_TICK; a new
entry makes the stream build its picture at once, as its own log's do
(controller/livemap/feed.py).  A member that does not answer keeps its cursor and
is asked again at the next tick (its part of the picture is then said `partial`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import httpx

PATH = "/api/v1/replicas/connections"
MEMBER_TICK = 0.5  # seconds between two asks of the members
TIMEOUT = 1.0  # seconds one ask may take (a stream waits for it)
LIMIT = 200  # entries of one member in one answer


class MemberLogs:
    """The new entries of the other members' logs.  `urls`: their API URLs now
    (None: masters are not spread); `token`: the admin token (their replica
    endpoints); `verify`: this replica's client TLS context (True: plain HTTP)."""

    def __init__(self, urls: Callable[[], list[str] | None], token: str,
                 verify: Callable[[], ssl.SSLContext | bool]) -> None:
        self.urls = urls
        self.token = token
        self.verify = verify
        self._cursors: dict[str, float] = {}
        self._client: httpx.AsyncClient | None = None

    async def new_entries(self) -> list[dict[str, Any]]:
        """Every member's entries since the last call, oldest first.  A member seen
        for the first time is only placed: its entries from then on are new."""
        urls = self.urls() or []
        for gone in set(self._cursors) - set(urls):
            del self._cursors[gone]
        if not urls:
            return []
        if self._client is None:
            # one client per stream: its connections are kept between ticks
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT, verify=self.verify(),
                headers={"Authorization": f"Bearer {self.token}"})
        answers = await asyncio.gather(*(self._ask(u) for u in urls), return_exceptions=True)
        out: list[dict[str, Any]] = []
        for url, answer in zip(urls, answers, strict=True):
            if isinstance(answer, BaseException):
                continue
            entries = answer
            if url not in self._cursors:
                self._cursors[url] = float(entries[-1]["time"]) if entries else 0.0
                continue
            if entries:
                self._cursors[url] = float(entries[-1]["time"])
                out.extend(entries)
        out.sort(key=lambda e: float(e["time"]))
        return out

    async def _ask(self, url: str) -> list[dict[str, Any]]:
        assert self._client is not None
        cursor = self._cursors.get(url)
        # placing a new member: its newest entry only
        params = {"limit": "1"} if cursor is None else {"after": str(cursor),
                                                        "limit": str(LIMIT)}
        answer = await self._client.get(url.rstrip("/") + PATH, params=params)
        answer.raise_for_status()
        entries: list[dict[str, Any]] = answer.json()["entries"]
        return entries

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
