"""Policy enforcement with real packets (docs/architecture.md, "Policy enforcement").

Two hosts, one module-scoped testbed (idle timeout 3 s), and an "outside" network
namespace on the underlay (a machine that is not part of daolinet):

    h1: a1 web 10.1.0.11   d1 db 172.31.7.11
    h2: a2 web 10.1.0.21   d2 db 172.31.7.21
    outside: 198.18.X.200 on the underlay bridge

Every test checks that `GET /trace` says what the packets did.  Each test removes
the policy it added.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import make_testbed
from testbed import Container, Testbed

from controller.datapath.state import CoreState
from tests.metricstext import value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IDLE = 3
WEB, DB = "web", "db"
LAYOUT = {
    "a1": ("h1", WEB, "10.1.0.11"),
    "d1": ("h1", DB, "172.31.7.11"),
    "a2": ("h2", WEB, "10.1.0.21"),
    "d2": ("h2", DB, "172.31.7.21"),
}


class Lab:
    def __init__(self, tb: Testbed, c: dict[str, Container], outside: str, outside_ip: str):
        self.tb, self.c, self.outside, self.outside_ip = tb, c, outside, outside_ip


def _add_outside(tb: Testbed) -> tuple[str, str]:
    """A namespace on the underlay that is no daolinet host (root end recorded)."""
    ip = f"198.18.{tb.octet}.200"
    return tb.add_namespace("out", ip), ip


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with make_testbed(hosts=2, idle_timeout=IDLE) as tb:
        tb.create_network(WEB, "10.1.0.0/24")
        tb.create_network(DB, "172.31.7.0/24")
        c = {n: tb.container(h, n, net, ip=ip) for n, (h, net, ip) in LAYOUT.items()}
        outside, outside_ip = _add_outside(tb)
        yield Lab(tb, c, outside, outside_ip)


# --------------------------------------------------------------------------- helpers


def trace(tb: Testbed, src: str, dst: str, proto: str, port: int | None = None) -> str:
    q = f"/trace?src={src}&dst={dst}&proto={proto}" + (f"&port={port}" if port else "")
    return str(tb.api_json("GET", q)["verdict"])


def rule(tb: Testbed, target: str, action: str, source: dict[str, Any], protocol: str = "any",
         ports: list[str] | None = None, position: int | None = None) -> str:
    body: dict[str, Any] = {"target_kind": "network", "target": target, "action": action,
                            "source": source, "protocol": protocol, "ports": ports or []}
    if position is not None:
        body["position"] = position
    return str(tb.api_json("POST", "/firewalls/rules", body)["id"])


def metric(tb: Testbed, name: str, host: str | None = None) -> float:
    text = httpx.get(f"{tb.api_url}/metrics", timeout=5).text
    found = (value(text, f"daolinet_host_{name}", host=host) if host
             else value(text, f"daolinet_{name}"))
    assert found is not None, f"{name} not in /metrics"
    return found


def pair_flows(tb: Testbed, host: str, src: Container, dst: Container) -> list[str]:
    """Flows that forward src -> dst on `host` (open pair flows, established, grants)."""
    return [f for f in tb.flows(host) if f"nw_src={src.ip}," in f and f"nw_dst={dst.ip}" in f
            and "priority=80," not in f]


def agrees(tb: Testbed, ok: bool, src: str, dst: str, proto: str, port: int | None = None
           ) -> None:
    verdict = trace(tb, src, dst, proto, port)
    assert verdict == ("allow" if ok else "deny"), (
        f"trace {src}->{dst} {proto}/{port} says {verdict}, packets {'passed' if ok else 'not'}"
    )


# --------------------------------------------------------------------------- tests


def test_port_rule_tcp_and_icmp_across_hosts_is_stateful(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    rid = rule(tb, WEB, "allow", {"kind": "network", "value": DB}, "tcp", ["5001"])
    try:
        ok = tb.tcp_ok(c["d1"], c["a2"], port=5001)  # replies pass: nc sees the FIN/ACKs
        assert ok, tb.state_dump()
        agrees(tb, ok, "d1", "a2", "tcp", 5001)
        # conntrack: the allowed connection was committed in daolinet's zone
        flows = "\n".join(tb.flows("h1", 2))
        assert "ct(commit,zone=218" in flows and "tp_dst=5001" in flows, flows
        ok = tb.tcp_ok(c["d1"], c["a2"], port=5002, timeout=2)
        assert not ok
        agrees(tb, ok, "d1", "a2", "tcp", 5002)
        ok = tb.ping(c["d1"], c["a2"], count=2, timeout=1)
        assert not ok
        agrees(tb, ok, "d1", "a2", "icmp")
        # the way back is no grant: a2 may not open connections to d1
        ok = tb.tcp_ok(c["a2"], c["d1"], port=5001, timeout=2)
        assert not ok
        agrees(tb, ok, "a2", "d1", "tcp", 5001)
        # ICMP by a rule of its own
        rid2 = rule(tb, WEB, "allow", {"kind": "network", "value": DB}, "icmp")
        try:
            ok = tb.ping(c["d2"], c["a1"], count=1, timeout=2)
            assert ok
            agrees(tb, ok, "d2", "a1", "icmp")
        finally:
            tb.api_json("DELETE", f"/firewalls/rules/{rid2}")
    finally:
        tb.api_json("DELETE", f"/firewalls/rules/{rid}")


def test_deny_rule_does_not_cut_replies_of_allowed_connections(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    tb.api_json("POST", "/groups", {"name": "both", "networks": [WEB, DB]})
    rid = rule(tb, DB, "deny", {"kind": "network", "value": WEB})
    try:
        ok = tb.tcp_ok(c["d1"], c["a2"], port=5003)  # db -> web allowed (group)
        assert ok, tb.state_dump()
        agrees(tb, ok, "d1", "a2", "tcp", 5003)
        ok = tb.ping(c["d2"], c["a1"], count=1, timeout=2)
        assert ok
        agrees(tb, ok, "d2", "a1", "icmp")
        ok = tb.tcp_ok(c["a2"], c["d1"], port=5004, timeout=2)  # web -> db denied
        assert not ok
        agrees(tb, ok, "a2", "d1", "tcp", 5004)
        ok = tb.ping(c["a1"], c["d2"], count=2, timeout=1)
        assert not ok
        agrees(tb, ok, "a1", "d2", "icmp")
    finally:
        tb.api_json("DELETE", f"/firewalls/rules/{rid}")
        tb.api_json("DELETE", "/groups/both")


def _background_ping(tb: Testbed, src: Container, dst: Container, name: str) -> Any:
    log = tb.dir / f"ping-{name}.log"
    proc = tb.spawn(src, "ping", "-n", "-i", "0.05", "-W", "1", "-O", dst.ip,
                    what="background ping", log=log)
    return proc, log


def _replies(log: Any) -> int:
    return len(re.findall(r"bytes from", log.read_text()))


def test_disconnect_revokes_within_a_second_while_traffic_flows(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    a1, a2 = c["a1"], c["a2"]
    proc, log = _background_ping(tb, a1, a2, "revoke")
    try:
        tb.wait_until(lambda: _replies(log) > 5, 5, "background ping did not start")
        assert pair_flows(tb, "h2", a1, a2)
        started = time.monotonic()
        tb.api_json("PUT", "/policies/a1/a2", {"action": "deny"})
        tb.wait_until(
            lambda: not pair_flows(tb, "h1", a1, a2) and not pair_flows(tb, "h2", a1, a2)
            and a2.ip not in {r.dst for r in tb.via_routes("h1")},
            1.0, "flows/routes of a1-a2 not revoked within 1 s", interval=0.05,
            detail=tb.state_dump,
        )
        assert time.monotonic() - started < 1.0
        time.sleep(0.3)
        before = _replies(log)
        time.sleep(1.0)
        assert _replies(log) == before, "replies still came after the disconnect"
        agrees(tb, False, "a1", "a2", "icmp")
        # granting takes effect at the next packet
        tb.api_json("PUT", "/policies/a1/a2", {"action": "allow"})
        tb.wait_until(lambda: _replies(log) > before, 1.0, "no reply after connect")
        agrees(tb, True, "a1", "a2", "icmp")
    finally:
        tb.stop(proc)
        tb.api("DELETE", "/policies/a1/a2")


def test_removing_a_network_from_a_group_revokes(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    tb.api_json("POST", "/groups", {"name": "g", "networks": [WEB, DB]})
    try:
        assert tb.ping(c["a1"], c["d2"], count=1, timeout=2)
        agrees(tb, True, "a1", "d2", "icmp")
        proc, log = _background_ping(tb, c["a1"], c["d2"], "group")
        try:
            tb.wait_until(lambda: _replies(log) > 3, 5, "background ping did not start")
            tb.api_json("DELETE", f"/groups/g/members/{DB}")
            tb.wait_until(lambda: not pair_flows(tb, "h1", c["a1"], c["d2"]), 1.0,
                          "group removal not revoked within 1 s", interval=0.05,
                          detail=tb.state_dump)
            time.sleep(0.3)
            before = _replies(log)
            time.sleep(1.0)
            assert _replies(log) == before
        finally:
            tb.stop(proc)
        agrees(tb, False, "a1", "d2", "icmp")
    finally:
        tb.api("DELETE", "/groups/g")


BURST = CoreState().packet_in_burst
# 10,000 datagrams over about 2 s.  Sent at full speed (a tenth of a second), the
# whole flood could pass before OVS's revalidator moved the datapath's cached flow
# from the first packet's path (meter, controller) to the new drop flow (about every
# 0.5 s): the test then measured the datapath's cache, not daolinet (seen 1 in 5).
FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10000):
    s.sendto(b"x" * 16, (sys.argv[1], 9999))
    if i % 100 == 99:
        time.sleep(0.02)
"""
# Packets the switch had to queue for the controller past its limit are dropped by
# OVS itself (connmgr's PacketIn queue, 100 a connection), counted nowhere daolinet
# reads: the share of the flood allowed to go unaccounted for.
UNACCOUNTED = 0.02


def port_counters(tb: Testbed, c: Container) -> tuple[int, int]:
    """(packets the switch received on c's port, packets its PacketIn meter dropped)."""
    h = tb.hosts[c.host]
    port = tb.vsctl(h, "get", "Interface", str(c.endpoint["port"]), "ofport").stdout.strip()
    mgmt = f"unix:{h.mgmt}"
    ports = tb.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "dump-ports", mgmt, port).stdout
    meter = tb.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "meter-stats", mgmt,
                    f"meter={port}").stdout
    rx = re.search(r"rx pkts=(\d+)", ports)
    dropped = re.search(r"0: packet_count:(\d+)", meter)
    assert rx and dropped, ports + meter
    return int(rx.group(1)), int(dropped.group(1))


def test_denied_flood_stays_in_the_switch_and_is_counted(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    agrees(tb, False, "a1", "d1", "udp", 9999)
    ins = metric(tb, "packet_ins_total", "h1")
    denied = metric(tb, "denied_packets_total")
    rx, metered = port_counters(tb, c["a1"])
    res = tb.exec(c["a1"], "python3", "-c", FLOOD, c["d1"].ip, timeout=60)
    assert res.returncode == 0, res.stderr
    rx2, _ = port_counters(tb, c["a1"])
    arrived = rx2 - rx
    assert arrived > 5000, f"only {arrived} flood packets reached the switch"

    def accounted() -> tuple[float, int, float]:
        """(PacketIns, meter drops, deny-flow drops in /metrics) since the flood began:
        read again each time, since the controller may still be working through the
        PacketIns the meter let by when the sender is done."""
        return (metric(tb, "packet_ins_total", "h1") - ins,
                port_counters(tb, c["a1"])[1] - metered,
                metric(tb, "denied_packets_total") - denied)

    # Every packet of the flood that reached the switch is accounted for: a
    # PacketIn, a meter drop, or a drop counted by the deny flow (/metrics), but for
    # what OVS dropped on its way to the controller (UNACCOUNTED).  Most of them are
    # the deny flow's: it is in place after the first PacketIn.
    tb.wait_until(
        lambda: (sum(accounted()) >= arrived * (1 - UNACCOUNTED)
                 and accounted()[2] >= arrived / 2),
        10, "the dropped packets are not counted in /metrics",
        detail=lambda: f"arrived {arrived}, (PacketIns, metered, denied) {accounted()}",
    )
    took, metered_now, denied_now = accounted()
    # The container's PacketIn meter lets its burst through; the drop flow takes the
    # rest (before it lands, the meter drops them).
    print(f"denied flood: {took:.0f} PacketIns, {metered_now} metered, {denied_now:.0f} "
          f"dropped by the deny flow, for {arrived} packets")
    assert took <= BURST + 4, f"a flood of 10000 denied packets caused {took} PacketIns"


def test_spoofed_source_is_dropped_at_its_port_and_counted(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    a1 = c["a1"]
    before = metric(tb, "spoofed_packets_total", "h1")
    tb.exec(a1, "ip", "addr", "add", "10.1.0.99/24", "dev", a1.ifnames[0], check=True)
    try:
        res = tb.exec(a1, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1",
                      "-I", "10.1.0.99", c["a2"].ip, timeout=10)
        assert res.returncode != 0, "a spoofed source got replies"
    finally:
        tb.exec(a1, "ip", "addr", "del", "10.1.0.99/24", "dev", a1.ifnames[0])
    tb.wait_until(lambda: metric(tb, "spoofed_packets_total", "h1") - before >= 3, 6,
                  "spoofed packets not counted")
    guard = [f for f in tb.flows("h1", 0) if "priority=55" in f]
    assert guard and any("n_packets=0," not in f for f in guard), guard
    assert tb.ping(a1, c["a2"], count=1, timeout=2), "its own address must still pass"


def test_published_port_is_reachable_from_the_underlay(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    a2, h2 = c["a2"], tb.hosts["h2"]
    port = tb.api_json("POST", "/firewalls/ports",
                       {"container": "a2", "host_port": 8080, "container_port": 80})
    try:
        # no rule lets the outside in: the DNAT alone does not
        agrees(tb, False, lab.outside_ip, "a2", "tcp", 80)
        assert not _outside_tcp(tb, lab, h2.address, 8080, a2, 80, timeout=2)
        rid = rule(tb, WEB, "allow", {"kind": "cidr", "value": str(tb.underlay)}, "tcp", ["80"])
        try:
            ok = _outside_tcp(tb, lab, h2.address, 8080, a2, 80)
            assert ok, tb.state_dump() + "\n" + tb.exec(h2, "nft", "list", "ruleset").stdout
            agrees(tb, ok, lab.outside_ip, "a2", "tcp", 80)
        finally:
            tb.api_json("DELETE", f"/firewalls/rules/{rid}")
    finally:
        tb.api_json("DELETE", f"/firewalls/ports/{port['id']}")
    tb.wait_until(lambda: "dnat" not in tb.exec(h2, "nft", "list", "ruleset").stdout, 3,
                  "the DNAT rule was not removed")


def _outside_tcp(tb: Testbed, lab: Lab, address: str, port: int, dst: Container,
                 dst_port: int, timeout: float = 5.0) -> bool:
    import secrets

    token = secrets.token_hex(8)
    server, out = tb.listen(dst, dst_port, udp=False)
    try:
        tb.exec(lab.outside, "nc", "-4", "-N", "-w", str(int(timeout)), address, str(port),
                input=token + "\n", timeout=timeout + 5)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and token not in out.read_text():
            time.sleep(0.05)
        return token in out.read_text()
    finally:
        tb.stop(server, timeout=2)


def test_external_network_reaches_outside_through_its_host(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    a1 = c["a1"]
    assert not tb.ping(a1, lab.outside_ip, count=1, timeout=1)
    tb.api_json("PATCH", f"/networks/{WEB}", {"external": True})
    try:
        tb.wait_until(lambda: "masquerade" in tb.exec("h1", "nft", "list", "ruleset").stdout,
                      3, "no masquerade rule on h1")
        assert tb.ping(a1, lab.outside_ip, count=1, timeout=2), tb.state_dump()
        # the outside saw the host, not the container
        seen = tb.exec(lab.outside, "ip", "neigh", "show").stdout
        assert tb.hosts["h1"].address in seen, seen
    finally:
        tb.api_json("PATCH", f"/networks/{WEB}", {"external": False})
    tb.wait_until(lambda: not tb.ping(a1, lab.outside_ip, count=1, timeout=0.5), 3,
                  "external access not revoked")


# Every kind of rule source, with real TCP and ICMP across hosts.  Each case adds one
# rule on network web and checks (source, protocol, port) -> passes or is dropped,
# and that trace says the same.  Ports differ per case so no conntrack entry of an
# earlier case can answer for a later one.
RULE_CASES = [
    # (case, action, source, tcp port of the rule, [(src, port, passes)])
    ("container", "allow", {"kind": "container", "value": "d2"}, 5010,
     [("d2", 5010, True), ("d1", 5010, False), ("d2", 5011, False)]),
    ("network", "allow", {"kind": "network", "value": DB}, 5020,
     [("d2", 5020, True), ("d1", 5020, True), ("d2", 5021, False)]),
    ("group", "allow", {"kind": "group", "value": "src"}, 5030,
     [("d2", 5030, True), ("d2", 5031, False)]),
    ("cidr", "allow", {"kind": "cidr", "value": "172.31.7.21/32"}, 5040,
     [("d2", 5040, True), ("d1", 5040, False)]),
    ("any", "allow", {"kind": "any"}, 5050,
     [("d1", 5050, True), ("d2", 5051, False)]),
    # A deny rule precedes "same network": a2 may not reach a1 on that port only.
    ("deny-container", "deny", {"kind": "container", "value": "a2"}, 5060,
     [("a2", 5060, False), ("a2", 5061, True)]),
]


@pytest.mark.parametrize(("case", "action", "source", "port", "checks"), RULE_CASES,
                         ids=[c[0] for c in RULE_CASES])
def test_each_rule_source_kind_with_tcp_and_icmp(lab: Lab, case: str, action: str,
                                                 source: dict[str, Any], port: int,
                                                 checks: list[tuple[str, int, bool]]) -> None:
    tb, c = lab.tb, lab.c
    if case == "group":
        tb.api_json("POST", "/groups", {"name": "src", "networks": [DB]})
    rid = rule(tb, WEB, action, source, "tcp", [str(port)])
    try:
        for src, dport, passes in checks:
            ok = tb.tcp_ok(c[src], c["a1"], port=dport, timeout=2 if not passes else 5)
            assert ok == passes, f"{case}: tcp {src}->a1:{dport} passed={ok}\n{tb.state_dump()}"
            agrees(tb, ok, src, "a1", "tcp", dport)
        # ICMP is not what the rule allows (nor denies): it follows the rest of the
        # policy - same network passes, another network is dropped.
        src = checks[0][0]
        same_network = c[src].network == WEB
        ok = tb.ping(c[src], c["a1"], count=2, timeout=1)
        assert ok == same_network, f"{case}: icmp {src}->a1 passed={ok}"
        agrees(tb, ok, src, "a1", "icmp")
    finally:
        tb.api("DELETE", f"/firewalls/rules/{rid}")
        if case == "group":
            tb.api("DELETE", "/groups/src")
