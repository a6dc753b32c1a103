"""The kernel routes daolinet owns on a host (protocol 211), kept from the stream.

* kind "via":   `dst/32 via VIA proto 211`
* kind "wg":    the same (VIA is a tunnel address, reached through the WireGuard
  interface); the allowed-ips part is hostnet/host/wireguard.py's
* kind "local": `dst/32 dev BRIDGE proto 211 scope link` plus the permanent
  neighbour `dst lladdr L dev BRIDGE nud permanent`

A snapshot is level-triggered: `plan_snapshot` (pure) compares it with what the
kernel holds and `KernelRouteTable.apply_snapshot` carries the plan out.  One
netlink socket stays open for the table: route setup is on the first-packet path.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.desired.models import ROUTE_PROTO, KernelRoute
from hostnet.host.netlink import NetlinkError, iproute, netlink_code, translate

MAIN_TABLE = 254
SCOPE_LINK = 253
NUD_PERMANENT = 0x80
_ESRCH = 3
_ENOENT = 2
_ENODEV = 19


@dataclass(frozen=True)
class InstalledRoute:
    """A protocol-211 /32 route found in the main table."""

    dst: str
    gateway: str | None
    oif: int | None


@dataclass(frozen=True)
class InstalledNeighbour:
    """A permanent neighbour found on the bridge."""

    dst: str
    lladdr: str


@dataclass
class SnapshotPlan:
    """What turns the kernel's state into a snapshot's: delete these, then install those."""

    delete_routes: list[InstalledRoute] = field(default_factory=list)
    delete_neighbours: list[InstalledNeighbour] = field(default_factory=list)
    install: list[KernelRoute] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.delete_routes or self.delete_neighbours or self.install)


def index_routes(routes: Iterable[KernelRoute]) -> dict[str, KernelRoute]:
    """Routes by destination; two different routes for one destination are an error."""
    by_dst: dict[str, KernelRoute] = {}
    for r in routes:
        dst = str(r.dst)
        if r.kind in ("via", "wg") and r.via is None:
            raise ValueError(f"route to {dst}: kind via without a via address")
        if r.kind == "local" and r.lladdr is None:
            raise ValueError(f"route to {dst}: kind local without lladdr")
        old = by_dst.get(dst)
        if old is not None and old != r:
            raise ValueError(f"conflicting routes for {dst}")
        by_dst[dst] = r
    return by_dst


def _route_part_matches(
    want: KernelRoute, have: InstalledRoute, bridge_index: int | None
) -> bool:
    if want.kind in ("via", "wg"):
        return have.gateway == str(want.via)
    return have.gateway is None and bridge_index is not None and have.oif == bridge_index


def route_matches(
    want: KernelRoute, have: InstalledRoute | None, neigh: InstalledNeighbour | None,
    bridge_index: int | None,
) -> bool:
    """True if the kernel already holds exactly `want` (route, and neighbour if local)."""
    if have is None or not _route_part_matches(want, have, bridge_index):
        return False
    return want.kind != "local" or (neigh is not None and neigh.lladdr == want.lladdr)


def plan_snapshot(
    desired: Iterable[KernelRoute],
    routes: Iterable[InstalledRoute],
    neighbours: Iterable[InstalledNeighbour],
    bridge_index: int | None,
) -> SnapshotPlan:
    """The changes that make (routes, neighbours) equal to `desired` (pure).

    Routes whose destination the snapshot does not name are deleted; a route for
    a named destination that differs is replaced in place (route replace), so the
    destination is never without a route meanwhile.  Permanent neighbours on the
    bridge are kept only for the snapshot's `local` destinations.
    """
    want = index_routes(desired)
    have: dict[str, InstalledRoute] = {}
    plan = SnapshotPlan()
    for r in routes:
        if r.dst not in want:
            plan.delete_routes.append(r)
        else:
            prev = have.get(r.dst)
            if prev is None or (
                not _route_part_matches(want[r.dst], prev, bridge_index)
                and _route_part_matches(want[r.dst], r, bridge_index)
            ):
                have[r.dst] = r
    neigh: dict[str, InstalledNeighbour] = {}
    local_dsts = {d for d, w in want.items() if w.kind == "local"}
    for n in neighbours:
        if n.dst not in local_dsts:
            plan.delete_neighbours.append(n)
        else:
            neigh[n.dst] = n
    for dst, w in want.items():
        if not route_matches(w, have.get(dst), neigh.get(dst), bridge_index):
            plan.install.append(w)
    return plan


class KernelRouteTable:
    """The protocol-211 routes of the main table and the bridge's permanent neighbours.

    Not thread-safe, and (pyroute2 0.9) not usable from a thread running an
    asyncio loop: the agent drives it from one worker thread.
    """

    def __init__(self, bridge: str, netns: str | None = None) -> None:
        self.bridge = bridge
        self.netns = netns
        self._stack = contextlib.ExitStack()
        self._ipr: Any = None
        self._bridge_index: int | None = None

    # -- socket -------------------------------------------------------------------

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            self._ipr = self._stack.enter_context(iproute(self.netns))
        return self._ipr

    def close(self) -> None:
        self._stack.close()
        self._ipr = None
        self._bridge_index = None

    def __enter__(self) -> KernelRouteTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bridge_index(self, *, refresh: bool = False) -> int | None:
        if self._bridge_index is None or refresh:
            with translate(f"look up link {self.bridge}"):
                found = self.ipr.link_lookup(ifname=self.bridge)
            self._bridge_index = int(found[0]) if found else None
        return self._bridge_index

    def _require_bridge(self, refresh: bool = False) -> int:
        idx = self.bridge_index(refresh=refresh)
        if idx is None:
            raise NetlinkError(f"bridge interface {self.bridge} does not exist")
        return idx

    @contextlib.contextmanager
    def _bridge_op(self) -> Iterator[None]:
        """Retry hint: a stale bridge index shows as ENODEV; drop the cache."""
        try:
            yield
        except NetlinkError as exc:
            if netlink_code(exc) == _ENODEV:
                self._bridge_index = None
            raise

    # -- reading ------------------------------------------------------------------

    def installed(self) -> tuple[list[InstalledRoute], list[InstalledNeighbour]]:
        """The daolinet routes and bridge neighbours the kernel holds now."""
        with translate("dump routes"):
            msgs = self.ipr.route(
                "dump", family=socket.AF_INET, table=MAIN_TABLE, proto=ROUTE_PROTO
            )
        routes = [
            InstalledRoute(dst=str(m.get("dst")), gateway=m.get("gateway"), oif=m.get("oif"))
            for m in msgs
            if m["proto"] == ROUTE_PROTO
            and m["dst_len"] == 32
            and m.get("table") == MAIN_TABLE
            and m.get("dst")
        ]
        neighbours: list[InstalledNeighbour] = []
        idx = self.bridge_index(refresh=True)
        if idx is not None:
            with translate(f"dump neighbours of {self.bridge}"):
                nmsgs = self.ipr.neigh("dump", family=socket.AF_INET, ifindex=idx)
            neighbours = [
                InstalledNeighbour(dst=str(n.get("dst")), lladdr=str(n.get("lladdr")).lower())
                for n in nmsgs
                if n["ifindex"] == idx and n["state"] & NUD_PERMANENT and n.get("dst")
                and n.get("lladdr")
            ]
        return routes, neighbours

    # -- single changes -----------------------------------------------------------

    def install(self, route: KernelRoute) -> None:
        dst = str(route.dst)
        if route.kind in ("via", "wg"):
            with translate(f"route replace {dst}/32 via {route.via}"):
                self.ipr.route(
                    "replace", dst=dst, dst_len=32, gateway=str(route.via),
                    proto=ROUTE_PROTO, table=MAIN_TABLE,
                )
            return
        for attempt in (0, 1):
            idx = self._require_bridge(refresh=attempt > 0)
            try:
                with self._bridge_op(), translate(
                    f"route replace {dst}/32 dev {self.bridge}"
                ):
                    self.ipr.route(
                        "replace", dst=dst, dst_len=32, oif=idx, proto=ROUTE_PROTO,
                        scope=SCOPE_LINK, table=MAIN_TABLE,
                    )
                with self._bridge_op(), translate(
                    f"neighbour replace {dst} lladdr {route.lladdr} dev {self.bridge}"
                ):
                    self.ipr.neigh(
                        "replace", dst=dst, lladdr=str(route.lladdr), ifindex=idx,
                        state=NUD_PERMANENT,
                    )
                return
            except NetlinkError as exc:
                if attempt or netlink_code(exc) != _ENODEV:
                    raise

    def uninstall(self, route: KernelRoute) -> None:
        """Remove one route (and its neighbour for `local`); absent is not an error."""
        dst = str(route.dst)
        if route.kind in ("via", "wg"):
            self._delete_route(InstalledRoute(dst, str(route.via), None))
            return
        idx = self.bridge_index()
        if idx is None:
            return  # no bridge, so neither route nor neighbour on it
        self._delete_route(InstalledRoute(dst, None, idx))
        self._delete_neighbour(InstalledNeighbour(dst, str(route.lladdr)), idx)

    def _delete_route(self, r: InstalledRoute) -> None:
        kwargs: dict[str, Any] = {
            "dst": r.dst, "dst_len": 32, "proto": ROUTE_PROTO, "table": MAIN_TABLE,
        }
        if r.gateway:
            kwargs["gateway"] = r.gateway
        elif r.oif is not None:
            kwargs["oif"] = r.oif
            # pyroute2 asks for scope universe unless told: the kernel then finds no
            # `scope link` route to delete (ESRCH, taken for "already gone").
            kwargs["scope"] = SCOPE_LINK
        try:
            with translate(f"route del {r.dst}/32"):
                self.ipr.route("del", **kwargs)
        except NetlinkError as exc:
            if netlink_code(exc) not in (_ESRCH, _ENOENT, _ENODEV):
                raise

    def _delete_neighbour(self, n: InstalledNeighbour, idx: int) -> None:
        try:
            with translate(f"neighbour del {n.dst} dev {self.bridge}"):
                self.ipr.neigh("del", dst=n.dst, ifindex=idx)
        except NetlinkError as exc:
            if netlink_code(exc) not in (_ESRCH, _ENOENT, _ENODEV):
                raise

    # -- stream messages ----------------------------------------------------------

    def apply_snapshot(self, routes: Sequence[KernelRoute]) -> SnapshotPlan:
        """Make the kernel hold exactly `routes` (of the ones daolinet owns)."""
        index_routes(routes)  # validate before touching anything
        installed, neighbours = self.installed()
        plan = plan_snapshot(routes, installed, neighbours, self.bridge_index())
        for r in plan.delete_routes:
            self._delete_route(r)
        idx = self.bridge_index()
        if idx is not None:
            for n in plan.delete_neighbours:
                self._delete_neighbour(n, idx)
        for route in plan.install:
            self.install(route)
        return plan

    def apply_delta(
        self, add: Sequence[KernelRoute], remove: Sequence[KernelRoute]
    ) -> None:
        """Remove then add (a destination moving between kinds/hosts ends up added)."""
        adding = index_routes(add)
        for route in remove:
            new = adding.get(str(route.dst))
            if new is None:
                self.uninstall(route)
            elif route.kind == "local" and new.kind != "local":
                # the route itself is swapped by the replace below, without a gap;
                # only the neighbour of the old local route has to go
                idx = self.bridge_index()
                if idx is not None:
                    self._delete_neighbour(InstalledNeighbour(str(route.dst), ""), idx)
            # else: replaced in place below
        for route in add:
            self.install(route)
