"""Hot-plugged routes with real traffic on three hosts (network namespaces + OVS
netdev bridges + the real controller and agents), see docs/architecture.md.

Containers (one module-scoped testbed, idle timeout 3 s, all hosts in one site):

    h1: a1 10.1.0.11   a2 10.1.0.12   r1 172.31.7.11
    h2: b1 10.1.0.21   b2 10.1.0.22   r2 172.31.7.21
    h3: c1 10.1.0.31   c2 10.1.0.32

Tests that need a clean switch wait for every connection to expire first; the
restart tests come last because they disturb the controller/agents.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_testbed
from testbed import (
    COOKIE_CONNECTION,
    COOKIE_DENY,
    GATEWAY_MAC,
    PRIO_CONNECTION,
    PRIO_MISS,
    Container,
    Flow,
    Testbed,
    tail,
)

PRIO_DENY = 80  # table 2 (controller/datapath/tables.py PRIO_STATEFUL_DENY)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

IDLE = 3
BLUE, RED = "blue", "red"
BLUE_NET, RED_NET = "10.1.0.0/24", "172.31.7.0/24"
LAYOUT = {
    "a1": ("h1", BLUE, "10.1.0.11"),
    "a2": ("h1", BLUE, "10.1.0.12"),
    "r1": ("h1", RED, "172.31.7.11"),
    "b1": ("h2", BLUE, "10.1.0.21"),
    "b2": ("h2", BLUE, "10.1.0.22"),
    "r2": ("h2", RED, "172.31.7.21"),
    "c1": ("h3", BLUE, "10.1.0.31"),
    "c2": ("h3", BLUE, "10.1.0.32"),
}


class Lab:
    def __init__(self, tb: Testbed, containers: dict[str, Container]) -> None:
        self.tb = tb
        self.c = containers

    def __getattr__(self, name: str) -> Container:
        try:
            return self.__dict__["c"][name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with make_testbed(hosts=3, idle_timeout=IDLE) as tb:
        tb.create_network(BLUE, BLUE_NET)
        tb.create_network(RED, RED_NET)
        containers = {
            name: tb.container(host, name, net, ip=ip) for name, (host, net, ip) in LAYOUT.items()
        }
        yield Lab(tb, containers)


@pytest.fixture
def tb(lab: Lab) -> Testbed:
    return lab.tb


# --------------------------------------------------------------------------- helpers


def pair_flows(tb: Testbed, host: str, src: Container, dst: Container) -> list[Flow]:
    """Per-connection flows (table 1, priority 100) of src → dst on `host`."""
    return [
        f for f in tb.connection_flows(host)
        if f.fields.get("nw_src") == src.ip and f.fields.get("nw_dst") == dst.ip
    ]


def has_via(tb: Testbed, host: str, dst: Container, via: str) -> bool:
    return any(r.dst == dst.ip and r.via == via for r in tb.via_routes(host))


def listed(routes: list[dict[str, Any]], src: Container, dst: Container) -> bool:
    """GET /routes lists src → dst (entries may name containers by IP, name or id)."""
    def ids(c: Container) -> set[str]:
        return {c.ip, c.name, str(c.endpoint.get("id"))}

    return any(
        str(r.get("src")) in ids(src) and str(r.get("dst")) in ids(dst) for r in routes
    )


def traceroute_settled(tb: Testbed, src: Container, dst: Container) -> list[str | None]:
    """Traceroute after a warm-up ping; one retry when a probe timed out (`*`)."""
    assert tb.ping(src, dst, count=1, timeout=2), f"{src} cannot ping {dst}"
    hops = tb.traceroute(src, dst)
    if None in hops:
        hops = tb.traceroute(src, dst)
    return hops


# --------------------------------------------------------------------------- tests


def test_hosts_and_containers_are_up(lab: Lab, tb: Testbed) -> None:
    hosts = {h["name"] for h in tb.api_json("GET", "/hosts")}
    assert hosts == {"h1", "h2", "h3"}
    for name, (host, net, ip) in LAYOUT.items():
        c = lab.c[name]
        assert (c.ip, c.host, c.network) == (ip, host, net)
        assert c.endpoint["mac"].lower() == "02:da:" + ":".join(
            f"{int(o):02x}" for o in ip.split(".")
        )
        # a local route + permanent neighbour for every container of its host
        local = [r for r in tb.parsed_kernel_routes(host) if r.dst == ip]
        assert local and local[0].via is None, tb.kernel_routes(host)
        # netdev datapath: TCP needs tx checksum offload off on the container side
        features = tb.exec(c, "ethtool", "-k", c.ifnames[0], check=True).stdout
        assert re.search(r"^tx-checksumming: off", features, re.M), (
            f"tx checksum offload still on in {c}: the agent must turn it off"
        )
    listed_names = {c["name"] for c in tb.api_json("GET", "/containers")}
    assert set(LAYOUT) <= listed_names


def test_first_packet_is_delivered(lab: Lab, tb: Testbed) -> None:
    """(3) Before any traffic only the base flows exist; the first packet arrives."""
    tb.wait_idle()
    for h in tb.hosts:
        table1 = tb.parsed_flows(h, 1)
        assert [f.priority for f in table1] == [PRIO_MISS], f"{h}: {tb.flows(h, 1)}"
        assert tb.via_routes(h) == [], f"{h}: {tb.kernel_routes(h)}"

    # ICMP: one echo request, no retry
    assert tb.ping(lab.a1, lab.b1, count=1, timeout=2), "first ping a1 → b1 (h1 → h2) lost"

    # UDP: a single datagram of a pair that has never talked
    assert not pair_flows(tb, "h1", lab.a2, lab.b2)
    assert tb.udp_ok(lab.a2, lab.b2, port=6001), "first UDP datagram a2 → b2 lost"

    # TCP: the first SYN gets through (a lost SYN is retried after 1 s)
    assert not pair_flows(tb, "h1", lab.a1, lab.c1)
    elapsed = tb.tcp_connect(lab.a1, lab.c1, port=6002)
    assert elapsed is not None, "TCP a1 → c1 (h1 → h3) failed"
    assert elapsed < 0.9, f"TCP a1 → c1 took {elapsed:.2f}s: the first SYN was lost"

    # same host, first packet
    assert not pair_flows(tb, "h1", lab.a2, lab.a1)
    assert tb.ping(lab.a2, lab.a1, count=1, timeout=2), "first ping a2 → a1 (same host) lost"


def test_arp_is_answered_with_the_gateway_mac(lab: Lab, tb: Testbed) -> None:
    """(1) The switch answers ARP; another container of the host never sees it."""
    a1, a2 = lab.a1, lab.a2
    ifname = a2.ifnames[0]
    dump = tb.dir / "a2-arp.pcap.txt"
    sniffer = tb.spawn(a2, "tcpdump", "-i", ifname, "-n", "-l", "-e", "arp",
                       what="tcpdump", log=dump)
    try:
        tb.wait_until(lambda: "listening on" in dump.read_text(), 10,
                      "tcpdump in a2 did not start", detail=lambda: tail(dump))
        tb.exec(a1, "ip", "neigh", "flush", "all", check=True)
        assert tb.ping(a1, a2, count=1, timeout=2), "a1 → a2 (same host)"
        assert tb.ping(a1, lab.b1, count=1, timeout=2), "a1 → b1 (other host)"
        neigh = tb.exec(a1, "ip", "neigh", "show", check=True).stdout
        macs = re.findall(r"lladdr (\S+)", neigh)
        assert macs, f"no neighbour learnt in a1: {neigh!r}"
        assert {m.lower() for m in macs} == {GATEWAY_MAC}, neigh
        # whether the container ARPs for its peers (on-link /24) or for the gateway,
        # every answer carries the gateway MAC
        learnt = {line.split()[0] for line in neigh.splitlines() if "lladdr" in line}
        assert {a2.ip, lab.b1.ip} <= learnt or str(a1.endpoint.get("gateway")) in learnt, neigh
        time.sleep(0.5)  # let tcpdump flush what it might have seen
    finally:
        tb.stop(sniffer, sig=signal.SIGINT)
    seen = [line for line in dump.read_text().splitlines()
            if a1.ip in line or a1.mac.lower() in line.lower()]
    assert not seen, f"a2 saw ARP of a1 (ARP was flooded): {seen}"


def test_traceroute_same_host_is_one_hop(lab: Lab, tb: Testbed) -> None:
    """(2) Same host: only the destination container."""
    assert traceroute_settled(tb, lab.a1, lab.a2) == [lab.a2.ip]


def test_traceroute_other_host_is_three_hops(lab: Lab, tb: Testbed) -> None:
    """(2) Other host: source host, destination host, container."""
    h1, h2 = tb.hosts["h1"], tb.hosts["h2"]
    assert traceroute_settled(tb, lab.a1, lab.b2) == [h1.address, h2.address, lab.b2.ip]


def test_connections_expire_when_idle(lab: Lab, tb: Testbed) -> None:
    """(4) Flows, `via` routes and the API entry go after the idle timeout and come
    back with the next packet."""
    a1, b1 = lab.a1, lab.b1
    h1, h2 = tb.hosts["h1"], tb.hosts["h2"]
    tb.wait_idle()

    def live() -> None:
        assert pair_flows(tb, "h1", a1, b1), f"no a1→b1 flow on h1:\n{tb.state_dump()}"
        assert pair_flows(tb, "h2", a1, b1), f"no a1→b1 flow on h2:\n{tb.state_dump()}"
        assert pair_flows(tb, "h2", b1, a1), f"no b1→a1 flow on h2:\n{tb.state_dump()}"
        assert pair_flows(tb, "h1", b1, a1), f"no b1→a1 flow on h1:\n{tb.state_dump()}"
        for f in (*tb.connection_flows("h1"), *tb.connection_flows("h2")):
            assert f.kind == COOKIE_CONNECTION, f.raw
            assert f.idle_timeout == IDLE, f.raw
            assert "send_flow_rem" in f.flags, f.raw
        assert has_via(tb, "h1", b1, h2.address), tb.kernel_routes("h1")
        assert has_via(tb, "h2", a1, h1.address), tb.kernel_routes("h2")
        assert listed(tb.routes(), a1, b1), tb.routes()

    assert tb.ping(a1, b1, count=1, timeout=2)
    live()

    started = time.monotonic()
    tb.wait_until(
        lambda: not tb.connection_flows("h1") and not tb.connection_flows("h2")
        and not tb.via_routes("h1") and not tb.via_routes("h2"),
        IDLE + 10, "connection a1 ↔ b1 did not expire", detail=tb.state_dump,
    )
    assert time.monotonic() - started >= IDLE - 1.5, "flows went before the idle timeout"
    tb.wait_until(lambda: not listed(tb.routes(), a1, b1), 5,
                  "GET /routes still lists a1 → b1 after expiry")

    assert tb.ping(a1, b1, count=1, timeout=2), "ping after expiry failed"
    live()


def test_networks_are_isolated(lab: Lab, tb: Testbed) -> None:
    """(5) Blue and red do not reach each other; each network reaches itself across
    hosts."""
    r1, r2 = lab.r1, lab.r2
    # same network, other host
    assert tb.ping(r1, r2, count=1, timeout=2), "red r1 → r2 (h1 → h2)"
    assert tb.tcp_ok(r1, r2, port=6101), "red TCP r1 → r2"
    assert tb.ping(lab.a2, lab.c2, count=1, timeout=2), "blue a2 → c2 (h1 → h3)"
    assert tb.tcp_ok(lab.b2, lab.c2, port=6102), "blue TCP b2 → c2 (h2 → h3)"
    # across networks: same host and other host, both directions
    for src, dst in ((r1, lab.a1), (r1, lab.b1), (lab.b2, r1), (lab.c1, r2)):
        assert not tb.ping(src, dst, count=2, timeout=1), f"{src} reached {dst}"
    # a denied pair is dropped in the switch (table 2 after conntrack, priority 80,
    # idle timeout) ...
    for host, src, dst in (("h1", r1, lab.b1), ("h2", lab.b2, r1), ("h3", lab.c1, r2)):
        deny = [f for f in tb.parsed_flows(host, 2)
                if f.fields.get("nw_src") == src.ip and f.fields.get("nw_dst") == dst.ip]
        if not deny:
            continue  # the hold time may be over already
        assert all(f.priority == PRIO_DENY and f.kind == COOKIE_DENY for f in deny), deny
        assert all(f.actions == "drop" and f.idle_timeout and not f.hard_timeout
                   for f in deny), deny
    assert any(f.priority == PRIO_DENY for h in tb.hosts for f in tb.parsed_flows(h, 2)), (
        f"no deny flow anywhere:\n{tb.state_dump()}"
    )
    # ... and never gets a kernel route
    assert r2.ip not in {r.dst for r in tb.via_routes("h3")}, tb.kernel_routes("h3")
    assert lab.c1.ip not in {r.dst for r in tb.via_routes("h2")}, tb.kernel_routes("h2")
    assert not tb.tcp_ok(r1, lab.b2, port=6103, timeout=2), "TCP red → blue got through"
    assert not tb.tcp_ok(lab.a1, r2, port=6104, timeout=2), "TCP blue → red got through"


def test_tcp_throughput_across_hosts(lab: Lab, tb: Testbed) -> None:
    result = tb.iperf3(lab.a1, lab.b1, seconds=2, port=5201)
    assert "error" not in result, result.get("error")
    received = result["end"]["sum_received"]
    assert received["bytes"] > 0 and received["bits_per_second"] > 0, received


def test_bad_inputs_are_refused_naming_the_field(lab: Lab, tb: Testbed) -> None:
    """Issue 17's bad inputs through the real controller process: a 4xx naming the field,
    nothing made (docs/security.md, "Validation"); a good network is still made after
    them, and traffic flows on."""
    h2 = tb.api_json("GET", "/hosts/h2")["address"]
    near_h2 = str(ipaddress.ip_network(f"{h2}/24", strict=False))
    container = {"name": "bad", "network": BLUE, "host": "h1"}
    cases = [
        ("/networks", {"name": "all", "subnet": "0.0.0.0/0"}, 422,
         "subnet 0.0.0.0/0 is too large: use /8 or smaller"),
        ("/networks", {"name": "lo", "subnet": "127.0.0.0/8"}, 422,
         "subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8"),
        ("/networks", {"name": "mc", "subnet": "224.0.0.0/8"}, 422,
         "subnet 224.0.0.0/8 overlaps the multicast range 224.0.0.0/4"),
        ("/networks", {"name": "under", "subnet": near_h2}, 409,
         f"subnet {near_h2} holds "),
        ("/containers", {**container, "ip": "127.0.0.1"}, 422,
         "ip 127.0.0.1 is in the loopback range"),
        ("/containers", {**container, "ip": "224.0.0.1"}, 422,
         "ip 224.0.0.1 is in the multicast range"),
        ("/containers", {**container, "ip": h2}, 422, f"ip {h2} is outside subnet"),
        ("/hosts", {"name": "hx", "address": "198.18.250.9", "wg_endpoint": "1.2.3.4:5_1820"},
         422, "wg_endpoint '1.2.3.4:5_1820' is not IPv4:PORT"),
    ]
    for path, body, status, detail in cases:
        r = tb.api("POST", path, json=body)
        assert (r.status_code, r.json()["detail"][:len(detail)]) == (status, detail), body
    assert {n["name"] for n in tb.api_json("GET", "/networks")} == {BLUE, RED}
    assert "bad" not in {c["name"] for c in tb.api_json("GET", "/containers")}
    assert tb.api("GET", "/hosts/hx").status_code == 404
    tb.create_network("ok", "10.20.0.0/16")
    assert tb.api("DELETE", "/networks/ok").status_code in (200, 204)
    assert tb.ping(lab.a1, lab.b1, count=1, timeout=2), "a1 → b1 after the refusals"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_stream_survives_controller_restart(lab: Lab, tb: Testbed, sig: int) -> None:
    """(6) A running TCP stream keeps flowing while the controller restarts; a new
    connection works once it is back."""
    src, dst = (lab.a1, lab.b1) if sig == signal.SIGTERM else (lab.a2, lab.b2)
    port = 5301 if sig == signal.SIGTERM else 5302
    out = tb.dir / f"iperf-{port}.json"
    server = tb.spawn(dst, "iperf3", "-s", "-1", "-p", str(port), what="iperf3 -s")
    try:
        tb.wait_until(
            lambda: str(port) in tb.exec(dst, "ss", "-Hltn", f"sport = :{port}").stdout,
            5, "iperf3 server did not listen",
        )
        client = tb.spawn(src, "iperf3", "-c", dst.ip, "-p", str(port), "-t", "8", "-J",
                          what="iperf3 -c", log=out)
        tb.wait_until(lambda: pair_flows(tb, src.host, src, dst), 5,
                      "stream did not start", detail=tb.state_dump)
        time.sleep(1.5)
        tb.restart_controller(sig=sig)
        client.popen.wait(timeout=30)
        result = json.loads(out.read_text())
        assert "error" not in result, result["error"]
        intervals = [i["sum"]["bytes"] for i in result["intervals"]]
        assert len(intervals) >= 7, intervals
        assert all(b > 0 for b in intervals), f"stream stalled during restart: {intervals}"
        assert result["end"]["sum_received"]["bytes"] > 0
    finally:
        tb.stop(server, timeout=2)
    # a new connection (a pair without flows) after the controller is back
    assert not pair_flows(tb, "h1", lab.a1, lab.c2)
    assert tb.ping(lab.a1, lab.c2, count=1, timeout=2), "new connection after restart"
    assert tb.tcp_ok(lab.a1, lab.c2, port=5400 + int(sig)), "new TCP connection after restart"


def test_agent_restart_loses_nothing(lab: Lab, tb: Testbed) -> None:
    """(6) Restarting an agent keeps the routes (after its resync) and the traffic."""
    a1, b1 = lab.a1, lab.b1
    h2 = tb.hosts["h2"]
    tb.wait_idle()  # only the connection of this test may hold routes
    log = tb.dir / "ping-agent-restart.log"
    pinger = tb.spawn(a1, "ping", "-n", "-i", "0.2", "-c", "60", "-W", "1", b1.ip,
                      what="background ping", log=log)
    try:
        tb.wait_until(lambda: has_via(tb, "h1", b1, h2.address), 5,
                      "no via route for the background ping", detail=tb.state_dump)
        before = {h: sorted(tb.kernel_routes(h)) for h in ("h1", "h2")}
        flows_before = {h: sorted(f.match for f in tb.connection_flows(h))
                        for h in ("h1", "h2")}
        tb.restart_agent("h1")
        tb.restart_agent("h2")
        # the resync (snapshot) must not change anything: keep checking for a while
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for h in ("h1", "h2"):
                assert sorted(tb.kernel_routes(h)) == before[h], (
                    f"{h} routes changed across agent restart:\n"
                    f"before {before[h]}\nafter {tb.kernel_routes(h)}"
                )
            time.sleep(0.2)
        for h in ("h1", "h2"):
            assert sorted(f.match for f in tb.connection_flows(h)) == flows_before[h]
        assert tb.ping(a1, b1, count=3, timeout=2, all_replies=True)
        assert tb.tcp_ok(a1, b1, port=6201), "TCP after agent restart"
        pinger.popen.wait(timeout=30)
    finally:
        tb.stop(pinger)
    stats = re.search(r"(\d+) packets transmitted, (\d+) received", log.read_text())
    assert stats, tail(log)
    assert stats.group(1) == stats.group(2), f"packets lost across agent restart: {stats[0]}"
    # and a brand-new connection through the restarted agents
    assert tb.ping(lab.b2, lab.a2, count=1, timeout=2)
    assert PRIO_CONNECTION in {f.priority for f in tb.parsed_flows("h1", 1)}
