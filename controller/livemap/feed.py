"""The map's event stream for one browser (server-sent events over a plain GET, so
the browser sends its bearer token in the `Authorization` header with `fetch`:
an `EventSource` cannot set headers, and a token in a URL would end in logs).

Events (one JSON object each, `data:` on one line):

* `view`: the whole bounded picture (controller/livemap/view.py) - first, then
  whenever it differs from the last one sent;
* `connections`: the connection log's new entries since the last tick, at most
  MAX_BATCH (`skipped`: a flood made it leave older ones out);
* a comment line every KEEPALIVE seconds, so proxies keep an idle stream open;
* `refused`, last: the caller's certificate was revoked since the stream opened.

Every TICK the stream asks the log for entries after its cursor and the desired
state for its version (one attribute read).  Either changed: it builds the
picture again, at once and then for SETTLE seconds as often as its cost allows
(every tick, or twice the time the last build took): an allowed first packet is
logged before its flows are installed, and a route is shown once installed.
With masters spread, the other replicas' log entries count too: `members`
(controller/livemap/members.py) brings them every MEMBER_TICK, and they are sent
and acted on as this replica's are.  Changes that leave no log entry (a connection
torn down with its container) are caught by a rebuild at least every `refresh`
seconds.  Nothing is sent per object, and nothing is polled
by the browser.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from controller.connlog.log import ConnectionLog, Filters
from controller.livemap.members import MEMBER_TICK, MemberLogs

TICK = 0.25  # seconds between looks at the log and the desired state
SETTLE = 1.5  # seconds after a change during which the picture is built again
REFRESH = 15.0  # seconds between rebuilds when nothing was seen to change
KEEPALIVE = 15.0
MAX_BATCH = 200  # log entries in one `connections` event


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (compact JSON holds no newline)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _same_picture(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Whether two pictures draw the same (their `time` aside)."""
    return a is not None and {**a, "time": 0} == {**b, "time": 0}


class Feed:
    """The stream of one browser.  `picture`: builds the bounded view; `version`:
    the desired state's current version (compared by identity); `connlog`: this
    replica's connection log (None: off); `replica`: its name in the entries;
    `members`: the other replicas' logs (None: this replica's only)."""

    def __init__(
        self,
        picture: Callable[[], Awaitable[dict[str, Any]]],
        version: Callable[[], object],
        connlog: ConnectionLog | None,
        replica: str,
        *,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.time,
        tick: float = TICK,
        refused: Callable[[], str | None] = lambda: None,
        members: MemberLogs | None = None,
    ) -> None:
        self.picture = picture
        self.version = version
        self.connlog = connlog
        self.replica = replica
        self.refresh = refresh
        self.clock = clock
        self.tick = tick
        # why the caller may no longer read (its certificate revoked since it
        # connected), asked every tick; None while it may
        self.refused = refused
        self.members = members

    async def events(self) -> AsyncIterator[str]:
        try:
            async for chunk in self._events():
                yield chunk
        finally:
            if self.members is not None:
                await self.members.aclose()

    async def _events(self) -> AsyncIterator[str]:
        cursor = self.clock()
        version = self.version()
        last, gap = await self._build()
        yield sse("view", last)
        now = self.clock()
        built = wrote = now
        settle_until = 0.0
        rebuild_at = now + self.refresh
        members_at = now
        while True:
            await asyncio.sleep(self.tick)
            why = self.refused()
            if why is not None:
                yield sse("refused", {"detail": why})
                return
            now = self.clock()
            entries, skipped = self._entries_after(cursor)
            if entries:
                cursor = float(entries[-1]["time"])
            if self.members is not None and now >= members_at:
                members_at = now + MEMBER_TICK
                theirs = await self.members.new_entries()
                entries = sorted([*entries, *theirs], key=lambda e: float(e["time"]))
            if entries:
                yield sse("connections", {"entries": entries, "skipped": skipped})
                wrote = now
            if entries or self.version() is not version:
                version = self.version()
                settle_until = now + SETTLE
            settling = now <= settle_until and now - built >= gap
            if settling or now >= rebuild_at:
                view, gap = await self._build()
                built = self.clock()
                rebuild_at = built + self.refresh
                if not _same_picture(last, view):
                    last = view
                    yield sse("view", view)
                    wrote = now
            if now - wrote >= KEEPALIVE:
                yield ": keepalive\n\n"
                wrote = now

    async def _build(self) -> tuple[dict[str, Any], float]:
        """The picture, and the least time until the next one: a tick, or twice
        what this one took (a large deployment's picture is rebuilt less often)."""
        started = time.monotonic()
        view = await self.picture()
        return view, max(self.tick, 2 * (time.monotonic() - started))

    def _entries_after(self, cursor: float) -> tuple[list[dict[str, Any]], bool]:
        """The log's entries after `cursor`, oldest first, at most MAX_BATCH: in a
        flood the newest MAX_BATCH (the map shows now, not a backlog), and whether
        older ones were left out."""
        if self.connlog is None:
            return [], False
        page = self.connlog.query(Filters(), MAX_BATCH, after=cursor)
        if not page.more:
            return [e.to_dict(self.replica) for e in page.entries], False
        newest = [e for e in self.connlog.query(Filters(), MAX_BATCH).entries
                  if e.time > cursor]
        return [e.to_dict(self.replica) for e in newest], True
