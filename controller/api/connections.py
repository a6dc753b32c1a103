"""The connection log's queries for the API (docs/architecture.md, "Connection log"):
the query parameters of GET /connections (validated at the edge: bounded strings, a
bounded page size), one replica's page of its own log, and the merge of every
member's pages when masters are spread (each replica logs what its switches sent
in, so any replica answers for all by asking the others, as GET /routes does).

Pages are cut by time: every entry's `time` is unique within its replica, so
`before` (page back) and `after` (follow) are exact cursors; across replicas two
entries of the same microsecond could straddle a page's edge (not seen in practice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from controller.connlog.log import MAX_PAGE, ConnectionLog, Filters

Text = Annotated[str, Field(min_length=1, max_length=253)]


class ConnectionQuery(BaseModel):
    """GET /connections' query parameters (also forwarded to the other members)."""

    model_config = ConfigDict(extra="forbid")

    container: Text | None = Field(None, description="either end's container (name)")
    network: Text | None = Field(None, description="either end's network")
    host: Text | None = Field(None, description="either end's host, or the host that saw it")
    verdict: Literal["allow", "deny"] | None = None
    event: Literal["allowed", "denied", "revoked", "expired"] | None = None
    rule: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="a firewall rule's id (or its first characters) that decided or "
        "was audited; an audited pair policy's a|b")
    kind: Literal["pair", "firewall", "network", "group", "default"] | None = Field(
        None, description="what decided")
    since: datetime | None = Field(None, description="entries at or after (ISO 8601 or epoch)")
    until: datetime | None = Field(None, description="entries before (ISO 8601 or epoch)")
    before: float | None = Field(
        None, ge=0, description="page back: entries older than this `time` (next_before)")
    after: float | None = Field(
        None, ge=0, description="follow: entries newer than this `time` (next_after)")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description=f"entries, at most {MAX_PAGE}")

    def filters(self) -> Filters:
        return Filters(
            container=self.container, network=self.network, host=self.host,
            verdict=self.verdict, event=self.event, rule=self.rule, kind=self.kind,
            since=self.since.timestamp() if self.since else None,
            until=self.until.timestamp() if self.until else None,
        )

    def params(self) -> dict[str, str]:
        """The same query for another member."""
        return {k: (v.isoformat() if isinstance(v, datetime) else str(v))
                for k, v in self.model_dump(exclude_none=True).items()}


def local_page(connlog: ConnectionLog | None, q: ConnectionQuery, replica: str) -> dict[str, Any]:
    """This replica's page: `entries` oldest first, and the cursors."""
    if connlog is None:
        raise HTTPException(
            404, "the connection log is off on this replica (--connection-log-entries 0)")
    page = connlog.query(q.filters(), q.limit, before=q.before, after=q.after)
    return _page([e.to_dict(replica) for e in page.entries], page.more, q)


def merge_pages(parts: list[dict[str, Any]], q: ConnectionQuery) -> dict[str, Any]:
    """Every member's page as one: the newest `limit` entries (with `after`: the
    oldest after it), by time."""
    rows = sorted((r for p in parts for r in p["entries"]), key=lambda r: float(r["time"]))
    more = any(bool(p["more"]) for p in parts) or len(rows) > q.limit
    rows = rows[:q.limit] if q.after is not None else rows[-q.limit:]
    return _page(rows, more, q)


def _page(rows: list[dict[str, Any]], more: bool, q: ConnectionQuery) -> dict[str, Any]:
    following = q.after is not None
    return {
        "entries": rows,
        "more": more,
        # pass as `before` for the page of older entries (null: none older match)
        "next_before": rows[0]["time"] if rows and more and not following else None,
        # pass as `after` to follow: the newest entry's time (or the cursor given)
        "next_after": rows[-1]["time"] if rows else q.after,
    }
