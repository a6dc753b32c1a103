"""Stand-ins shared by the unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FakeRuntime:
    """The API's view of the runtime (controller/api/deps.py, RuntimeView): serving
    every host while `master` is set (the only controller's generation while it
    leads; None: before it leads), with the live connections `routes` (GET /routes
    filters them by host)."""

    def __init__(self, master: int | None = 1, routes: Sequence[dict[str, Any]] = ()) -> None:
        self.master = master
        self._routes = list(routes)

    def serves(self, host: str) -> bool:
        return self.master is not None

    def owner_api(self, host: str) -> str | None:
        return None

    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._routes
                if host is None or host in (r["src_host"], r["dst_host"])]
