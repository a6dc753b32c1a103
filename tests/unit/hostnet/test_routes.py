"""Snapshot reconciliation of the kernel route table (pure logic, no privileges)."""

from __future__ import annotations

import pytest

from controller.desired.models import KernelRoute
from hostnet.host.routes import (
    InstalledNeighbour,
    InstalledRoute,
    index_routes,
    plan_snapshot,
    route_matches,
)

BR = 7


def via(dst: str, gw: str) -> KernelRoute:
    return KernelRoute(kind="via", dst=dst, via=gw)  # type: ignore[arg-type]


def local(dst: str, mac: str) -> KernelRoute:
    return KernelRoute(kind="local", dst=dst, lladdr=mac)  # type: ignore[arg-type]


def test_empty_snapshot_removes_everything_owned():
    routes = [InstalledRoute("10.1.0.6", "198.18.0.12", 3), InstalledRoute("10.1.0.5", None, BR)]
    neighs = [InstalledNeighbour("10.1.0.5", "02:da:0a:01:00:05")]
    plan = plan_snapshot([], routes, neighs, BR)
    assert plan.delete_routes == routes
    assert plan.delete_neighbours == neighs
    assert plan.install == []


def test_in_sync_snapshot_is_a_no_op():
    want = [via("10.1.0.6", "198.18.0.12"), local("10.1.0.5", "02:da:0a:01:00:05")]
    routes = [InstalledRoute("10.1.0.6", "198.18.0.12", 3), InstalledRoute("10.1.0.5", None, BR)]
    neighs = [InstalledNeighbour("10.1.0.5", "02:da:0a:01:00:05")]
    assert plan_snapshot(want, routes, neighs, BR).empty


def test_missing_routes_are_installed_and_stale_removed():
    want = [via("10.1.0.6", "198.18.0.12"), local("10.1.0.5", "02:da:0a:01:00:05")]
    routes = [InstalledRoute("10.1.0.9", "198.18.0.12", 3)]
    plan = plan_snapshot(want, routes, [], BR)
    assert plan.delete_routes == [InstalledRoute("10.1.0.9", "198.18.0.12", 3)]
    assert plan.install == want


def test_changed_route_is_replaced_not_deleted():
    # the destination moved to another host: replace in place, no gap
    want = [via("10.1.0.6", "198.18.0.13")]
    routes = [InstalledRoute("10.1.0.6", "198.18.0.12", 3)]
    plan = plan_snapshot(want, routes, [], BR)
    assert plan.delete_routes == []
    assert plan.install == want


def test_local_route_missing_neighbour_or_wrong_mac_is_reinstalled():
    want = [local("10.1.0.5", "02:da:0a:01:00:05")]
    routes = [InstalledRoute("10.1.0.5", None, BR)]
    assert plan_snapshot(want, routes, [], BR).install == want
    wrong = [InstalledNeighbour("10.1.0.5", "02:da:0a:01:00:99")]
    plan = plan_snapshot(want, routes, wrong, BR)
    assert plan.install == want
    assert plan.delete_neighbours == []  # replaced, not deleted


def test_local_route_on_other_device_is_reinstalled():
    want = [local("10.1.0.5", "02:da:0a:01:00:05")]
    routes = [InstalledRoute("10.1.0.5", None, BR + 1)]
    neighs = [InstalledNeighbour("10.1.0.5", "02:da:0a:01:00:05")]
    assert plan_snapshot(want, routes, neighs, BR).install == want


def test_stray_permanent_neighbour_on_bridge_is_removed():
    neighs = [InstalledNeighbour("10.1.0.77", "02:da:0a:01:00:4d")]
    want = [via("10.1.0.77", "198.18.0.12")]
    plan = plan_snapshot(want, [], neighs, BR)
    assert plan.delete_neighbours == neighs


def test_duplicate_installed_destination_prefers_matching_one():
    want = [via("10.1.0.6", "198.18.0.12")]
    routes = [InstalledRoute("10.1.0.6", "198.18.0.99", 3),
              InstalledRoute("10.1.0.6", "198.18.0.12", 3)]
    assert plan_snapshot(want, routes, [], BR).install == []


def test_conflicting_routes_in_snapshot_are_rejected():
    with pytest.raises(ValueError, match="conflicting"):
        index_routes([via("10.1.0.6", "198.18.0.12"), via("10.1.0.6", "198.18.0.13")])
    # exact duplicates are harmless
    assert len(index_routes([via("10.1.0.6", "198.18.0.12")] * 2)) == 1


def test_incomplete_routes_are_rejected():
    with pytest.raises(ValueError, match="without a via"):
        index_routes([KernelRoute(kind="via", dst="10.1.0.6")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without lladdr"):
        index_routes([KernelRoute(kind="local", dst="10.1.0.6")])  # type: ignore[arg-type]


def test_route_matches_needs_bridge_for_local():
    want = local("10.1.0.5", "02:da:0a:01:00:05")
    have = InstalledRoute("10.1.0.5", None, BR)
    n = InstalledNeighbour("10.1.0.5", "02:da:0a:01:00:05")
    assert route_matches(want, have, n, BR)
    assert not route_matches(want, have, n, None)
    assert not route_matches(want, None, n, BR)
