"""Root-only tests of hostnet's netlink layer against namespaces made here.

Every test runs its "host" side inside a private netns (`dlthn-h-*`), so nothing
touches the machine's own namespace; addresses are from 198.18.0.0/15 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyr_netns

from controller.desired.models import KernelRoute
from hostnet.host import netlink
from hostnet.host.attach import Attacher, AttachError, AttachRequest, SystemHostOps
from hostnet.host.ovs import Ovs, OvsError
from hostnet.host.routes import KernelRouteTable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout


def ns_json(ns: str, *args: str) -> list[dict]:
    out = sh("ip", "-n", ns, "-j", *args)
    return json.loads(out) if out.strip() else []


def new_ns(prefix: str) -> str:
    name = f"dlthn-{prefix}-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    return name


def del_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def host_ns() -> Iterator[str]:
    """A private netns the test (main thread) runs in, as if it were a host."""
    name = new_ns("h")
    try:
        pyr_netns.pushns(name)
        try:
            yield name
        finally:
            pyr_netns.popns()
    finally:
        del_ns(name)


@pytest.fixture
def container_ns() -> Iterator[str]:
    name = new_ns("c")
    try:
        yield name
    finally:
        del_ns(name)


@pytest.fixture
def bridge(host_ns: str) -> str:
    """A stand-in for br-dl's LOCAL interface: one end of a veth, up, 198.18.0.1/24."""
    sh("ip", "link", "add", "dlbr", "type", "veth", "peer", "name", "dlbrp")
    sh("ip", "addr", "add", "198.18.0.1/24", "dev", "dlbr")
    sh("ip", "link", "set", "dlbr", "up")
    sh("ip", "link", "set", "dlbrp", "up")
    return "dlbr"


def via(dst: str, gw: str) -> KernelRoute:
    return KernelRoute(kind="via", dst=dst, via=gw)  # type: ignore[arg-type]


def local(dst: str, mac: str) -> KernelRoute:
    return KernelRoute(kind="local", dst=dst, lladdr=mac)  # type: ignore[arg-type]


def owned_routes(ns: str) -> set[tuple[str, str]]:
    rows = ns_json(ns, "route", "show", "proto", "211")
    return {(r["dst"], r.get("gateway") or r["dev"]) for r in rows}


def permanent_neighbours(ns: str, dev: str) -> set[tuple[str, str]]:
    rows = ns_json(ns, "neigh", "show", "dev", dev, "nud", "permanent")
    return {(r["dst"], r["lladdr"]) for r in rows}


def test_route_table_snapshot_and_delta(host_ns: str, bridge: str):
    # a route daolinet does not own must survive every snapshot
    sh("ip", "route", "add", "198.19.9.0/24", "via", "198.18.0.250", "proto", "static")
    # a stale owned route and neighbour, as left by a previous run
    sh("ip", "route", "add", "198.19.0.99/32", "via", "198.18.0.12", "proto", "211")
    sh("ip", "neigh", "add", "198.19.0.98", "lladdr", "02:da:c6:13:00:62", "dev", bridge,
       "nud", "permanent")
    with KernelRouteTable(bridge) as table:
        table.apply_snapshot([via("198.19.0.6", "198.18.0.12"),
                              local("198.19.0.5", "02:da:c6:13:00:05")])
        assert owned_routes(host_ns) == {("198.19.0.6", "198.18.0.12"), ("198.19.0.5", bridge)}
        assert permanent_neighbours(host_ns, bridge) == {("198.19.0.5", "02:da:c6:13:00:05")}
        rows = ns_json(host_ns, "route", "show", "198.19.0.5")
        assert rows[0]["scope"] == "link"
        assert ns_json(host_ns, "route", "show", "198.19.9.0/24")  # untouched

        # the same snapshot again changes nothing
        assert table.apply_snapshot([via("198.19.0.6", "198.18.0.12"),
                                     local("198.19.0.5", "02:da:c6:13:00:05")]).empty

        # delta: add, move a destination to another host, remove an absent route
        table.apply_delta(
            add=[via("198.19.0.7", "198.18.0.12"), via("198.19.0.6", "198.18.0.13")],
            remove=[via("198.19.0.6", "198.18.0.12"), via("198.19.0.200", "198.18.0.12")],
        )
        assert owned_routes(host_ns) == {("198.19.0.6", "198.18.0.13"),
                                         ("198.19.0.7", "198.18.0.12"), ("198.19.0.5", bridge)}
        # a local container moved away: local -> via
        table.apply_delta(add=[via("198.19.0.5", "198.18.0.12")],
                          remove=[local("198.19.0.5", "02:da:c6:13:00:05")])
        assert ("198.19.0.5", "198.18.0.12") in owned_routes(host_ns)
        assert permanent_neighbours(host_ns, bridge) == set()
        table.apply_delta(add=[], remove=[local("198.19.0.44", "02:da:c6:13:00:2c")])

        # an empty snapshot leaves only what daolinet does not own
        table.apply_snapshot([])
        assert owned_routes(host_ns) == set()
        assert ns_json(host_ns, "route", "show", "198.19.9.0/24")


def test_route_change_latency(host_ns: str, bridge: str):
    """A route change through the agent's netlink table against the same change by
    `ip route replace`, the obvious alternative, timed in the same run (the machine's
    load moves both): netlink in process must be faster, and the routes must be there."""
    n = 200
    with KernelRouteTable(bridge) as table:
        table.apply_snapshot([])
        t0 = time.perf_counter()
        for i in range(n):
            r = via(f"198.19.1.{i % 250 + 1}", "198.18.0.12")
            table.apply_delta(add=[r], remove=[])
        add_time = (time.perf_counter() - t0) / n
        assert ("198.19.1.200", "198.18.0.12") in owned_routes(host_ns)
        t0 = time.perf_counter()
        table.apply_delta(add=[local("198.19.2.1", "02:da:c6:13:02:01")], remove=[])
        local_time = time.perf_counter() - t0
        assert ("198.19.2.1", bridge) in owned_routes(host_ns)
        table.apply_snapshot([])
    baseline_n = 20
    t0 = time.perf_counter()
    for i in range(baseline_n):
        sh("ip", "-n", host_ns, "route", "replace", f"198.19.3.{i + 1}/32", "via", "198.18.0.12")
    baseline = (time.perf_counter() - t0) / baseline_n
    for i in range(baseline_n):
        sh("ip", "-n", host_ns, "route", "del", f"198.19.3.{i + 1}/32")
    print(f"via route change: {add_time * 1e3:.3f} ms, local: {local_time * 1e3:.3f} ms; "
          f"baseline, ip route replace: {baseline * 1e3:.3f} ms")
    assert add_time < baseline
    assert local_time < 2 * baseline  # a neighbour entry and a route


def test_local_route_without_bridge_is_a_clear_error(host_ns: str):
    with KernelRouteTable("dlnobr") as table, pytest.raises(
        netlink.NetlinkError, match="dlnobr does not exist"
    ):
        table.apply_snapshot([local("198.19.0.5", "02:da:c6:13:00:05")])


def test_veth_into_container_namespace(host_ns: str, container_ns: str):
    netlink.create_veth("dlvh0", "dlvp0", mtu=1400)
    netlink.move_to_netns("dlvp0", container_ns)
    netlink.configure_container_side(
        container_ns, "dlvp0", new_name="eth0", mac="02:da:c6:12:00:05", mtu=1400,
        ip="198.18.0.5", prefixlen=24, gateway="198.18.0.1",
    )
    netlink.disable_tx_offload(container_ns, "eth0")
    netlink.set_link_up("dlvh0", mtu=1400)

    (eth0,) = ns_json(container_ns, "addr", "show", "dev", "eth0")
    assert eth0["mtu"] == 1400 and eth0["address"] == "02:da:c6:12:00:05"
    assert "UP" in eth0["flags"]
    assert {(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"} \
        == {("198.18.0.5", 24)}
    (lo,) = ns_json(container_ns, "link", "show", "dev", "lo")
    assert "UP" in lo["flags"]
    (default,) = ns_json(container_ns, "route", "show", "default")
    assert default["gateway"] == "198.18.0.1" and default["dev"] == "eth0"
    features = sh("ip", "netns", "exec", container_ns, "ethtool", "-k", "eth0")
    assert "tx-checksumming: off" in features
    (host_side,) = ns_json(host_ns, "link", "show", "dev", "dlvh0")
    assert host_side["mtu"] == 1400

    assert netlink.delete_link("dlvh0") is True
    assert netlink.delete_link("dlvh0") is False
    assert not netlink.link_exists("eth0", container_ns)


def test_netns_exists_and_errors(container_ns: str):
    assert netlink.netns_exists(container_ns)
    assert not netlink.netns_exists("dlthn-does-not-exist")
    assert not netlink.netns_exists("../etc")
    with pytest.raises(netlink.NetlinkError, match="does not exist"):
        netlink.move_to_netns("dlnolink0", container_ns)
    with pytest.raises(netlink.NetlinkError, match="does not exist"):
        netlink.configure_container_side(
            "dlthn-does-not-exist", "x", mac="02:da:00:00:00:09", mtu=1500,
            ip="198.18.0.9", prefixlen=24, gateway=None)
    assert not os.path.exists("/run/netns/dlthn-does-not-exist")  # never created


class FakeController:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def create_container(self, *, name, network, host, ip, mac):
        return {"id": "ep-it-1", "name": name, "network": network, "host": host,
                "ip": "198.18.0.5", "mac": "02:da:c6:12:00:05", "port": "dlitp1",
                "prefixlen": 24, "gateway": "198.18.0.1", "mtu": 1450}

    async def get_container(self, name_or_id):
        raise AssertionError("not used")

    async def delete_container(self, name_or_id):
        self.deleted.append(name_or_id)


class NoOvs(Ovs):
    """An OVSDB that refuses every port: attach must fail at its last step."""

    def __init__(self) -> None:
        super().__init__("unix:/nonexistent")

    def run(self, *args: str) -> str:
        if "add-port" in args:
            raise OvsError("ovs-vsctl add-port: database connection failed")
        return ""


def test_attach_failure_leaves_nothing(host_ns: str, container_ns: str):
    ctl = FakeController()
    ops = SystemHostOps(NoOvs(), "br-dl", tx_offload_off=True)
    with ThreadPoolExecutor(1) as pool:  # created here, so it runs in host_ns
        att = Attacher("h1", ctl, ops, executor=pool)
        with pytest.raises(AttachError, match="database connection failed") as ei:
            asyncio.run(att.attach(AttachRequest(netns=container_ns, network="blue")))
    assert ei.value.status == 500
    assert ctl.deleted == ["ep-it-1"]
    host_links = {link["ifname"] for link in ns_json(host_ns, "link", "show")}
    assert host_links == {"lo"}
    ctr_links = {link["ifname"] for link in ns_json(container_ns, "link", "show")}
    assert ctr_links == {"lo"}


def test_attach_into_missing_netns_touches_nothing(host_ns: str):
    ctl = FakeController()
    ops = SystemHostOps(NoOvs(), "br-dl")
    with ThreadPoolExecutor(1) as pool:
        att = Attacher("h1", ctl, ops, executor=pool)
        with pytest.raises(AttachError, match="network namespace dlthn-nope does not exist"):
            asyncio.run(att.attach(AttachRequest(netns="dlthn-nope", network="blue")))
    assert ctl.deleted == []
    assert not os.path.exists("/run/netns/dlthn-nope")
