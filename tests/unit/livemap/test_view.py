"""The map's picture (controller/livemap/view.py): aggregation by site and host,
what the operator opened, denials in their window, and the caps at the scale the
map is made for (1,000 hosts, 10,000 containers)."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

from controller.desired.index import DesiredIndex
from controller.desired.models import Endpoint, Host
from controller.livemap import view as v
from controller.livemap.view import DENY_WINDOW, Expansion, build_view

NOW = 1_800_000_000.0


def desired(layout: dict[str, tuple[str, list[str]]],
            index: DesiredIndex | None = None) -> DesiredIndex:
    """Hosts by name -> (site, container names); container i of host j gets
    10.(j).0.(i+2) in network n.  Put into `index` (default a new one)."""
    index = index if index is not None else DesiredIndex()
    with index.batch():
        for j, (host, (site, names)) in enumerate(layout.items(), start=1):
            index.put_host(Host(name=host, address=ipaddress.IPv4Address(f"198.18.{j // 250}."
                                                                      f"{j % 250 + 1}"),
                                site=site, dpid=j))
            for i, name in enumerate(names):
                ip = ipaddress.IPv4Address(f"10.{j // 250}.{j % 250}.{i + 2}")
                index.put_endpoint(Endpoint(
                    id=f"id-{name}", name=name, network="n", host=host, ip=ip,
                    mac=f"02:00:{j // 250:02x}:{j % 250:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                    port=f"p{j}-{i}"))
    return index


LAB = {"h1": ("east", ["a1", "a2"]), "h2": ("east", ["b1"]), "h3": ("west", ["w1"])}


def route(src_ip: str, dst_ip: str, path: str) -> dict[str, Any]:
    return {"src": "x", "src_ip": src_ip, "dst": "y", "dst_ip": dst_ip, "path": path}


def denial(src: str, dst: str, host: str, site: str, at: float) -> dict[str, Any]:
    return {"time": at, "last": at, "proto": "tcp", "reason": "firewall rule r1",
            "rule_id": "r1", "count": 3,
            "src": {"container": src, "host": "h1", "site": "east", "ip": "10.0.1.2"},
            "dst": {"container": dst, "host": host, "site": site, "ip": "10.0.3.2",
                    "port": 22}}


ROUTES = [route("10.0.1.2", "10.0.1.3", "local"),       # a1 - a2 on h1
          route("10.0.1.2", "10.0.2.2", "underlay"),    # a1 - b1, east
          route("10.0.1.3", "10.0.3.2", "wireguard"),   # a2 - w1, east - west
          route("10.0.2.2", "192.0.2.9", "external")]   # b1 - outside


def edges(view: dict[str, Any]) -> set[tuple[str, str, str, int]]:
    return {(e["a"], e["b"], e["path"], e["count"]) for e in view["edges"]}


def test_a_small_deployment_is_opened_whole_with_an_edge_per_connection() -> None:
    view = build_view(desired(LAB), ROUTES, [], Expansion(), NOW)
    assert [(s["name"], s["hosts"], s["containers"], s["open"]) for s in view["sites"]] == [
        ("east", 2, 3, True), ("west", 1, 1, True)]
    assert {c["id"] for c in view["containers"]} == {"c:a1", "c:a2", "c:b1", "c:w1"}
    assert edges(view) == {("c:a1", "c:a2", "local", 1), ("c:a1", "c:b1", "underlay", 1),
                           ("c:a2", "c:w1", "wireguard", 1),
                           ("c:b1", "x:outside", "external", 1)}
    one = next(e for e in view["edges"] if e["path"] == "wireguard")
    assert (one["src_ip"], one["dst_ip"], one["verdict"]) == ("10.0.1.3", "10.0.3.2", "allow")


def test_closed_sites_and_hosts_take_their_ends_and_count_them() -> None:
    closed = build_view(desired(LAB), ROUTES, [], Expansion(auto=False), NOW)
    assert closed["hosts"] == [] and closed["containers"] == []
    assert edges(closed) == {("s:east", "s:east", "local", 1), ("s:east", "s:east", "underlay", 1),
                             ("s:east", "s:west", "wireguard", 1),
                             ("s:east", "x:outside", "external", 1)}
    # an aggregate of one connection names its pair; of more, none
    assert next(e for e in closed["edges"] if e["path"] == "wireguard")["src_ip"] == "10.0.1.3"
    two = build_view(desired(LAB), [*ROUTES, route("10.0.1.2", "10.0.3.2", "wireguard")], [],
                     Expansion(auto=False), NOW)
    across = next(e for e in two["edges"] if e["path"] == "wireguard")
    assert across["count"] == 2 and "src_ip" not in across
    # east open, its hosts closed but h1: h2's container is drawn to h2
    part = build_view(desired(LAB), ROUTES, [],
                      Expansion(hosts=frozenset({"h1"}), auto=False), NOW)
    assert {h["name"]: h["open"] for h in part["hosts"]} == {"h1": True, "h2": False}
    assert {c["name"] for c in part["containers"]} == {"a1", "a2"}
    assert ("c:a1", "h:h2", "underlay", 1) in edges(part)
    assert ("c:a2", "s:west", "wireguard", 1) in edges(part)


def test_denials_show_for_their_window_then_go() -> None:
    index = desired(LAB)
    fresh = denial("a1", "w1", "h3", "west", NOW - 5)
    old = denial("a2", "w1", "h3", "west", NOW - DENY_WINDOW - 1)
    view = build_view(index, [], [fresh, old], Expansion(), NOW)
    (edge,) = view["edges"]
    assert (edge["a"], edge["b"], edge["verdict"], edge["path"]) == (
        "c:a1", "c:w1", "deny", "denied")
    assert (edge["src"], edge["dst"], edge["port"], edge["reason"], edge["packets"]) == (
        "a1", "w1", 22, "firewall rule r1", 3)
    assert build_view(index, [], [fresh], Expansion(), NOW + DENY_WINDOW + 6)["edges"] == []


def test_expanding_too_much_is_cut_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v, "MAX_CONTAINERS", 2)
    monkeypatch.setattr(v, "MAX_HOSTS", 2)
    view = build_view(desired(LAB), [], [], Expansion(), NOW)
    # east (2 hosts) fits, west would make 3; h1 (2 containers) fits, h2 would make 3
    assert [s["open"] for s in view["sites"]] == [True, False]
    assert [(h["name"], h["open"]) for h in view["hosts"]] == [("h1", True), ("h2", False)]
    assert view["truncated"] == {"hosts": 1, "containers": 1, "edges": 0}


def test_at_scale_the_answer_stays_bounded_and_quick() -> None:
    """1,000 hosts in 4 sites, 10 containers each, 20,000 live connections; the
    operator opens one site and 100 hosts (the most one request may)."""
    layout = {f"h{j}": (f"s{j % 4}", [f"c{j}-{i}" for i in range(10)]) for j in range(1000)}
    index = desired(layout)
    ips = [str(ep.ip) for ep in index.endpoints()]
    n = len(ips)
    routes = [route(ips[k % n], ips[(k * 7919 + 13) % n], "underlay") for k in range(20_000)]
    hosts = frozenset(f"h{j}" for j in range(0, 400, 4))  # all in site s0
    started = time.perf_counter()
    view = build_view(index, routes, [], Expansion(sites=frozenset({"s0"}), hosts=hosts), NOW)
    took = time.perf_counter() - started
    assert view["totals"] == {"sites": 4, "hosts": 1000, "containers": 10_000}
    assert len(view["hosts"]) == 250 and len(view["containers"]) == 1000
    assert len(view["edges"]) <= v.MAX_EDGES
    size = len(json.dumps(view))
    print(f"\nscale picture: {size / 1e6:.2f} MB, {len(view['edges'])} edges, {took:.2f} s")
    assert size < 2_000_000
    # every connection is counted on some edge (none is lost to the aggregation)
    assert sum(e["count"] for e in view["edges"]) == 20_000
