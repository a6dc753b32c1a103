"""One picture of the network for the map, bounded and aggregated (pure: no I/O).

A deployment of 1,000 hosts and 10,000 containers does not fit one drawing, nor
one answer: the map shows every site, the hosts of the sites the operator opened,
the containers of the hosts opened, and every connection between two *visible*
nodes, counted.  A connection whose end is inside a closed site or host is drawn
to that site or host (two ends in one closed node make an edge to itself: the
node's inner traffic).  Small deployments open everything (`AUTO_*`).

Node ids: `s:SITE`, `h:HOST`, `c:CONTAINER`, and `x:outside` for addresses outside
daolinet.  Every list has a cap; what a cap cut is counted in `truncated`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.desired.index import DesiredReads
from controller.desired.models import Host

# Opened without asking when the whole deployment is at most this big.
AUTO_HOSTS = 50
AUTO_CONTAINERS = 300
# Caps of one answer (the stream sends the same picture, so the same caps).
MAX_HOSTS = 1000
MAX_CONTAINERS = 2000
MAX_EDGES = 5000
MAX_EXPAND = 100  # sites and hosts opened by one request
DENY_WINDOW = 30.0  # seconds a denied attempt stays on the map after its last packet

OUTSIDE = "x:outside"

# (container, host, site) of one end of a connection; None: outside daolinet
End = tuple[str, str, str] | None


@dataclass(frozen=True)
class Expansion:
    """What the operator opened: sites (their hosts shown) and hosts (their
    containers shown; opening a host opens its site).  `auto`: open everything when
    the deployment is small."""

    sites: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    auto: bool = True


@dataclass
class _Open:
    """The sites and hosts whose insides are drawn, after the caps."""

    sites: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)


def build_view(
    desired: DesiredReads,
    routes: Iterable[Mapping[str, Any]],
    denials: Iterable[Mapping[str, Any]],
    expansion: Expansion,
    now: float,
) -> dict[str, Any]:
    """The picture: `sites`, `hosts` (of open sites), `containers` (of open hosts),
    `edges` (live connections by path, denied attempts of the last DENY_WINDOW
    seconds), and what the caps cut."""
    hosts = sorted(desired.hosts(), key=lambda h: (h.site, h.name))
    endpoints = desired.endpoints()
    per_host: dict[str, int] = {}
    for ep in endpoints:
        per_host[ep.host] = per_host.get(ep.host, 0) + 1
    site_of = {h.name: h.site for h in hosts}
    auto = expansion.auto and len(hosts) <= AUTO_HOSTS and len(endpoints) <= AUTO_CONTAINERS
    opened, truncated = _opened(hosts, per_host, expansion, auto)

    sites: dict[str, dict[str, Any]] = {}
    for h in hosts:
        s = sites.setdefault(h.site, {"id": f"s:{h.site}", "name": h.site, "hosts": 0,
                                      "containers": 0, "open": h.site in opened.sites})
        s["hosts"] += 1
        s["containers"] += per_host.get(h.name, 0)
    host_rows = [
        {"id": f"h:{h.name}", "name": h.name, "site": h.site, "address": str(h.address),
         "containers": per_host.get(h.name, 0), "open": h.name in opened.hosts,
         "relay": h.relay}
        for h in hosts if h.site in opened.sites
    ]
    containers = sorted(
        ({"id": f"c:{ep.name}", "name": ep.name, "ip": str(ep.ip), "network": ep.network,
          "host": ep.host, "site": site_of.get(ep.host, "")}
         for ep in endpoints if ep.host in opened.hosts),
        key=lambda c: (c["host"], c["name"]),
    )

    def node(end: End) -> str:
        if end is None:
            return OUTSIDE
        container, host, site = end
        if site not in opened.sites:
            return f"s:{site}"
        if host not in opened.hosts:
            return f"h:{host}"
        return f"c:{container}"

    # a route names its ends by address: one dict of every container's, built once
    ends: dict[str, End] = {str(ep.ip): (ep.name, ep.host, site_of.get(ep.host, ""))
                            for ep in endpoints}
    edges = _edges(ends, routes, denials, node, now)
    if len(edges) > MAX_EDGES:
        edges.sort(key=lambda e: -int(e["count"]))
        truncated["edges"] = len(edges) - MAX_EDGES
        edges = edges[:MAX_EDGES]
    return {
        "time": now,
        "sites": sorted(sites.values(), key=lambda s: str(s["name"])),
        "hosts": host_rows,
        "containers": containers,
        "edges": edges,
        "totals": {"sites": len(sites), "hosts": len(hosts), "containers": len(endpoints)},
        "truncated": truncated,
        "deny_window": DENY_WINDOW,
    }


def _opened(hosts: list[Host], per_host: dict[str, int], expansion: Expansion,
            auto: bool) -> tuple[_Open, dict[str, int]]:
    """The sites and hosts opened, within MAX_HOSTS hosts and MAX_CONTAINERS
    containers shown (sites and hosts in name order; what does not fit stays closed
    and is counted)."""
    site_of = {h.name: h.site for h in hosts}
    want_sites = {h.site for h in hosts} if auto else set(expansion.sites)
    want_hosts = set(site_of) if auto else {h for h in expansion.hosts if h in site_of}
    want_sites |= {site_of[h] for h in want_hosts}
    opened = _Open()
    truncated = {"hosts": 0, "containers": 0, "edges": 0}
    by_site: dict[str, list[str]] = {}
    for h in hosts:
        by_site.setdefault(h.site, []).append(h.name)
    shown_hosts = 0
    for site in sorted(want_sites):
        names = by_site.get(site, [])
        if shown_hosts + len(names) > MAX_HOSTS:
            truncated["hosts"] += len(names)
            continue
        opened.sites.add(site)
        shown_hosts += len(names)
    shown = 0
    for host in sorted(want_hosts):
        n = per_host.get(host, 0)
        if site_of[host] not in opened.sites:
            continue
        if shown + n > MAX_CONTAINERS:
            truncated["containers"] += n
            continue
        opened.hosts.add(host)
        shown += n
    return opened, truncated


def _edges(ends: Mapping[str, End], routes: Iterable[Mapping[str, Any]],
           denials: Iterable[Mapping[str, Any]], node: Callable[[End], str], now: float
           ) -> list[dict[str, Any]]:
    """Live connections (undirected: a route is a pair) by path, and denied attempts
    (directed) still in their window, each counted between the visible nodes."""
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def add(a: str, b: str, path: str, verdict: str, detail: dict[str, Any]) -> None:
        key = (a, b, path, verdict)
        edge = out.get(key)
        if edge is None:
            out[key] = {"id": "|".join(key), "a": a, "b": b, "path": path,
                        "verdict": verdict, "count": 1, **detail}
        else:
            edge["count"] += 1
            # an aggregated edge stands for many pairs: no one pair's detail
            for k in detail:
                edge.pop(k, None)

    for row in routes:
        a, b = sorted((node(ends.get(str(row.get("src_ip")))),
                       node(ends.get(str(row.get("dst_ip"))))))
        add(a, b, str(row.get("path") or "external"), "allow", {
            "src": row.get("src"), "dst": row.get("dst"), "src_ip": row.get("src_ip"),
            "dst_ip": row.get("dst_ip")})
    for entry in denials:
        if float(entry.get("last", entry.get("time", 0.0))) < now - DENY_WINDOW:
            continue
        src, dst = entry["src"], entry["dst"]
        add(node(_entry_end(src)), node(_entry_end(dst)), "denied", "deny", {
            "src": src.get("container") or src.get("ip"),
            "dst": dst.get("container") or dst.get("ip"),
            "src_ip": src.get("ip"), "dst_ip": dst.get("ip"), "proto": entry.get("proto"),
            "port": dst.get("port"), "reason": entry.get("reason"),
            "rule_id": entry.get("rule_id"), "time": entry.get("time"),
            "packets": entry.get("count")})
    return list(out.values())


def _entry_end(end: Mapping[str, Any]) -> End:
    if not end.get("container"):
        return None
    return (str(end["container"]), str(end.get("host") or ""), str(end.get("site") or ""))
