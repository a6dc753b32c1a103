"""Replicated controllers on etcd (docs/architecture.md, "Replicas"), with real traffic.

One module-scoped testbed: a 3-member etcd cluster on loopback, 3 controller
replicas (each reaches every etcd member through its own loopback proxy, so a test
can cut one replica off from etcd while it keeps its switches and its API; each of
site "default", the lab hosts' site, with a remote OpenFlow target for other sites),
two hosts, and containers of one network:

    h1: a1 10.1.0.11 ... a6 10.1.0.16      h2: b1 10.1.0.21 ... b6 10.1.0.26

Each test that needs a connection nobody has set up yet takes a fresh pair.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_testbed
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser
from tcpproxy import TcpProxy
from testbed import BRIDGE, Container, Testbed, tail

sys.path.insert(0, str(Path(__file__).parents[1]))
from etcdcluster import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IDLE = 3
REPLICAS = 3
TAKEOVER_LIMIT = 3.0  # the issue: a new master takes over within 3 s
REMOTE_IP = "198.51.100.1"  # the replicas' target for other sites (nothing listens)


class Lab:
    def __init__(self, tb: Testbed, etcd: EtcdCluster, proxies: list[list[TcpProxy]],
                 containers: dict[str, Container]) -> None:
        self.tb = tb
        self.etcd = etcd
        self.proxies = proxies  # proxies[replica][member]
        self.c = containers
        self._fresh = iter([(f"a{i}", f"b{i}") for i in range(2, 7)])

    def fresh_pair(self) -> tuple[Container, Container]:
        """Two containers on different hosts that have not talked yet."""
        a, b = next(self._fresh)
        return self.c[a], self.c[b]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    etcd = EtcdCluster(3)
    proxies: list[list[TcpProxy]] = []
    try:
        for _ in range(REPLICAS):
            proxies.append([
                TcpProxy(("127.0.0.1", int(ep.rsplit(":", 1)[1]))) for ep in etcd.endpoints
            ])
        stores = [
            "etcd://" + ",".join(p.endpoint for p in row) + "/replicas-test"
            for row in proxies
        ]
        with make_testbed(hosts=2, idle_timeout=IDLE, replicas=REPLICAS, store=stores,
                          replica_site="default", replica_remote_ip=REMOTE_IP) as tb:
            tb.create_network("blue", "10.1.0.0/24")
            containers = {}
            for i in range(1, 7):
                containers[f"a{i}"] = tb.container("h1", f"a{i}", "blue", ip=f"10.1.0.1{i}")
                containers[f"b{i}"] = tb.container("h2", f"b{i}", "blue", ip=f"10.1.0.2{i}")
            yield Lab(tb, etcd, proxies, containers)
    finally:
        for row in proxies:
            for p in row:
                p.close()
        etcd.close()


@pytest.fixture
def tb(lab: Lab) -> Testbed:
    return lab.tb


# --------------------------------------------------------------------------- helpers


def leader(tb: Testbed, timeout: float = 10.0, other_than: int | None = None) -> int:
    """The one replica OVS's database shows as master of every switch (waits for an
    election)."""
    return tb.wait_leader(timeout, other_than=other_than, confirmed=False, interval=0.05)


def replica_api(tb: Testbed, i: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{tb.replica_url(i)}/api/v1{path}",
                         headers={"Authorization": f"Bearer {tb.token}"}, timeout=15.0, **kwargs)


class Pinger:
    """`ping -i 0.05` in the background; counts what was sent and answered."""

    def __init__(self, tb: Testbed, src: Container, dst: Container, seconds: float) -> None:
        count = int(seconds / 0.05)
        self.out = tb.dir / f"ping-{src.name}-{dst.name}-{time.monotonic_ns()}.log"
        self.proc = tb.spawn(src, "ping", "-n", "-i", "0.05", "-W", "1", "-c", str(count),
                             dst.ip, what="ping", log=self.out)
        self.tb = tb

    def result(self) -> tuple[int, int]:
        self.proc.popen.wait(timeout=120)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", self.out.read_text())
        assert m, tail(self.out)
        return int(m.group(1)), int(m.group(2))


def new_connection_works(tb: Testbed, src: Container, dst: Container, timeout: float) -> float:
    """Seconds until a ping of a pair without flows gets through (set up by the leader)."""
    started = time.monotonic()
    tb.wait_until(lambda: tb.ping(src, dst, count=1, timeout=1), timeout,
                  f"no new connection {src.name} -> {dst.name}", interval=0.05,
                  detail=lambda: tb.roles_dump() + "\n" + tb.state_dump())
    return time.monotonic() - started


def log_time(path: Path, pattern: str, after: float = 0.0) -> float | None:
    """The wall-clock time of the first log line matching `pattern` (after `after`)."""
    for line in path.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after:
                return stamp
    return None


class _Datapath:
    """What os-ken's message classes need to serialize and parse, without an app."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser


def role_request(mgmt: Path, role: int, generation: int) -> Any:
    """Send one OpenFlow 1.3 role request on a switch's management socket (as a
    replica with that generation would) and return the switch's answer (a role reply
    or an error message)."""
    dp = _Datapath()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(mgmt))
        for msg in (ofproto_v1_3_parser.OFPHello(dp),
                    ofproto_v1_3_parser.OFPRoleRequest(dp, role, generation)):
            msg.serialize()
            sock.sendall(msg.buf)
        while True:
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                assert chunk, "the switch closed the connection"
                header += chunk
            version, msg_type, length, xid = struct.unpack("!BBHI", header)
            body = b""
            while len(body) < length - 8:
                chunk = sock.recv(length - 8 - len(body))
                assert chunk, "the switch closed the connection"
                body += chunk
            if msg_type in (ofproto_v1_3.OFPT_ROLE_REPLY, ofproto_v1_3.OFPT_ERROR):
                return ofproto_parser.msg(dp, version, msg_type, length, xid, header + body)


# --------------------------------------------------------------------------- tests


def test_one_replica_masters_every_switch_and_the_others_are_slaves(lab: Lab, tb: Testbed) -> None:
    lead = leader(tb)
    for host in tb.hosts:
        roles = tb.controller_roles(host)
        assert sorted(roles.values()) == ["master", "slave", "slave"], tb.roles_dump()
        assert tb.master_of(host) == [lead]
    # every replica counts every switch as connected, the followers too
    assert [tb.replica_gauge(i, "daolinet_switches_connected") for i in range(REPLICAS)] \
        == [len(tb.hosts)] * REPLICAS
    # the network works through the leader
    assert tb.ping(lab.c["a1"], lab.c["b1"], count=2, timeout=2)


def test_switches_of_another_site_get_the_remote_targets(lab: Lab, tb: Testbed) -> None:
    """The lab's switches (the replicas' site) connect to every replica's underlay
    target; a host of another site registering is given every replica's remote one."""
    local = sorted(tb.openflow_target(i) for i in range(REPLICAS))
    remote = sorted(tb.openflow_target(i, remote=True) for i in range(REPLICAS))
    assert all(t.startswith(f"tcp:{REMOTE_IP}:") for t in remote) and len(set(remote)) == 3
    for host in tb.hosts:
        assert sorted(tb.vsctl(host, "get-controller", BRIDGE).stdout.split()) == local
        r = replica_api(tb, 1, "GET", f"/hosts/{host}")
        assert r.status_code == 200 and r.json()["openflow_targets"] == local, r.text
    follower = (leader(tb) + 1) % REPLICAS
    r = replica_api(tb, follower, "POST", "/hosts",
                    json={"name": "far1", "address": "198.51.100.11", "site": "far"})
    assert r.status_code == 200, r.text
    assert r.json()["openflow_targets"] == remote
    # GET /replicas shows both targets of every replica, on any replica
    shown = replica_api(tb, follower, "GET", "/replicas")
    assert shown.status_code == 200, shown.text
    assert [(x["name"], x["site"], x["openflow"], x["openflow_remote"])
            for x in shown.json()["replicas"]] == [
        (f"c{i}", "default", tb.openflow_target(i), tb.openflow_target(i, remote=True))
        for i in range(REPLICAS)]


def test_a_stale_generation_is_refused_by_the_switch(lab: Lab, tb: Testbed) -> None:
    """The fence a returning replica meets: a MASTER role request with a generation
    older than the leader's is refused (OFPRRFC_STALE) and the leader stays master."""
    lead = leader(tb)
    generation = replica_api(tb, lead, "GET", "/replicas").json()["generation"]
    assert isinstance(generation, int) and generation > 0
    for name, host in tb.hosts.items():
        answer = role_request(host.mgmt, ofproto_v1_3.OFPCR_ROLE_MASTER, generation - 1)
        assert isinstance(answer, ofproto_v1_3_parser.OFPErrorMsg), (name, answer)
        assert (answer.type, answer.code) == (
            ofproto_v1_3.OFPET_ROLE_REQUEST_FAILED, ofproto_v1_3.OFPRRFC_STALE), (name, answer)
        assert tb.master_of(name) == [lead], tb.roles_dump()
    # the leader's own generation is not stale: a request with it is answered as master
    # (sent as SLAVE: nothing is taken from the leader)
    answer = role_request(next(iter(tb.hosts.values())).mgmt, ofproto_v1_3.OFPCR_ROLE_SLAVE,
                          generation)
    assert isinstance(answer, ofproto_v1_3_parser.OFPRoleReply), answer
    assert answer.generation_id == generation, answer
    assert tb.ping(lab.c["a1"], lab.c["b1"], count=1, timeout=2)


def test_every_replica_serves_the_api(lab: Lab, tb: Testbed) -> None:
    lead = leader(tb)
    follower = (lead + 1) % REPLICAS
    other = (lead + 2) % REPLICAS
    r = replica_api(tb, follower, "POST", "/networks", json={"name": "green",
                                                              "subnet": "10.7.0.0/24"})
    assert r.status_code in (200, 201), r.text
    # what one replica wrote, every other serves (its watch catches up at once)
    tb.wait_until(lambda: replica_api(tb, other, "GET", "/networks/green").status_code == 200,
                  2.0, "a network made through one replica is not served by another")
    # validation is linearizable: the same subnet through two replicas at once
    results: list[int] = []

    def create(i: int, name: str) -> None:
        results.append(replica_api(tb, i, "POST", "/networks",
                                   json={"name": name, "subnet": "10.8.0.0/24"}).status_code)

    threads = [threading.Thread(target=create, args=(i, f"dup{i}")) for i in (follower, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) in ([200, 409], [201, 409]), results
    # live routes are the leader's: a follower forwards the request
    assert tb.ping(lab.c["a1"], lab.c["b1"], count=1, timeout=2)
    via_follower = replica_api(tb, follower, "GET", "/routes")
    assert via_follower.status_code == 200, via_follower.text
    assert any(r["src_ip"] in ("10.1.0.11", "10.1.0.21") for r in via_follower.json())
    for name in ("green", "dup" + str(follower), "dup" + str(other)):
        replica_api(tb, lead, "DELETE", f"/networks/{name}")


def test_killed_master_is_replaced_within_3s_and_traffic_keeps_flowing(
    lab: Lab, tb: Testbed
) -> None:
    old = leader(tb)
    before = replica_api(tb, old, "GET", "/replicas").json()
    assert before["leader"] == f"c{old}", before
    a1, b1 = lab.c["a1"], lab.c["b1"]
    assert tb.ping(a1, b1, count=1, timeout=2)
    pinger = Pinger(tb, a1, b1, seconds=6)
    time.sleep(1.0)
    killed_at = time.monotonic()
    tb.kill_replica(old, signal.SIGKILL)
    new = tb.wait_leader(10, other_than=old)
    takeover = time.monotonic() - killed_at
    assert takeover <= TAKEOVER_LIMIT, f"takeover took {takeover:.2f}s"
    assert leader(tb, timeout=10, other_than=old) == new  # and OVS's database agrees
    # every survivor names the new leader (a read of the store, not forwarded)
    for i in range(REPLICAS):
        if i != old:
            after = replica_api(tb, i, "GET", "/replicas").json()
            assert after["leader"] == f"c{new}", (i, after)
            assert after["generation"] > before["generation"], (before, after)
            assert [x["name"] for x in after["replicas"] if x["leader"]] == [f"c{new}"]
    src, dst = lab.fresh_pair()
    setup = new_connection_works(tb, src, dst, timeout=10)
    sent, received = pinger.result()
    assert received == sent, f"established traffic lost {sent - received} of {sent} pings"
    print(f"\ntakeover {takeover:.2f}s, first new connection {takeover + setup:.2f}s "
          f"after the kill, established pings lost {sent - received}/{sent}")
    # The killed replica comes back as a slave: it does not steal the switches.
    tb.start_replica(old)
    tb.wait_until(
        lambda: all(len(tb.controller_roles(h)) == REPLICAS for h in tb.hosts), 15,
        "the restarted replica did not reconnect to every switch",
        detail=tb.roles_dump)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert all(tb.master_of(h) == [new] for h in tb.hosts), tb.roles_dump()
        time.sleep(0.1)


def test_partitioned_leader_steps_down_before_another_leads(lab: Lab, tb: Testbed) -> None:
    """Cut the leader off from etcd (it keeps its switches and its API): it must stop
    acting as master before any other replica is elected, never both at once."""
    old = leader(tb)
    a1, b1 = lab.c["a1"], lab.c["b1"]
    pinger = Pinger(tb, a1, b1, seconds=6)
    time.sleep(0.5)
    cut_at = time.time()
    for proxy in lab.proxies[old]:
        proxy.cut()
    try:
        new = tb.wait_until(
            lambda: (m := tb.master_of("h1")) and m[0] != old and m[0] + 1, 10,
            "no other replica took over from the partitioned leader",
            interval=0.05, detail=tb.roles_dump) - 1
        assert leader(tb) == new
        stepped_down = log_time(tb.replica_log(old), r"stepping down|leadership .* is lost",
                                after=cut_at - 1)
        elected = log_time(tb.replica_log(new), r"leading the controller replicas",
                           after=cut_at - 1)
        assert stepped_down is not None, tail(tb.replica_log(old))
        assert elected is not None, tail(tb.replica_log(new))
        assert stepped_down < elected, (
            f"replica {old} stepped down at {stepped_down:.3f}, after replica {new} was "
            f"elected at {elected:.3f}: two masters at once")
        # the partitioned replica is a slave everywhere and sends nothing
        assert all(tb.master_of(h) == [new] for h in tb.hosts), tb.roles_dump()
        src, dst = lab.fresh_pair()
        new_connection_works(tb, src, dst, timeout=10)
        sent, received = pinger.result()
        assert received == sent, f"established traffic lost {sent - received} of {sent} pings"
        metrics = httpx.get(f"{tb.replica_url(old)}/metrics", timeout=5).text
        assert re.search(r"^daolinet_replica_leader 0$", metrics, re.M), metrics
        assert re.search(r'^daolinet_openflow_refused_total\{kind="slave"\} 0$', metrics,
                         re.M), "the deposed replica tried to write to a switch"
        # its API still answers: reads from its index; what only the leader knows
        # it cannot forward while it cannot learn who leads (a clear 503)
        assert replica_api(tb, old, "GET", "/networks/blue").status_code == 200
        routes = replica_api(tb, old, "GET", "/routes")
        assert routes.status_code in (200, 503), routes.text
        if routes.status_code == 503:
            assert "lead" in routes.json()["detail"], routes.text
    finally:
        for proxy in lab.proxies[old]:
            proxy.restore()
    # healed, it stays a follower: no role is stolen back
    time.sleep(2.0)
    assert all(tb.master_of(h) == [new] for h in tb.hosts), tb.roles_dump()


def test_losing_etcd_members(lab: Lab, tb: Testbed) -> None:
    """One of three members down changes nothing visible; two down stop policy changes
    with a 503 while established traffic keeps flowing; back up, all works again."""
    lead = leader(tb)
    a1, b1 = lab.c["a1"], lab.c["b1"]
    assert tb.ping(a1, b1, count=1, timeout=2)
    etcd_leader = lab.etcd.leader()
    assert etcd_leader is not None
    # A follower member: invisible.  (Losing the etcd leader stalls requests for its
    # raft election, up to ~2 s, which can outlast the controller leader's lease
    # margin: the controller leadership may then move - established traffic flows on,
    # docs/architecture.md, "Replicas".)
    first = (etcd_leader + 1) % 3
    second = etcd_leader
    lab.etcd.kill(first)
    try:
        r = replica_api(tb, (lead + 1) % REPLICAS, "POST", "/networks",
                        json={"name": "one-down", "subnet": "10.9.0.0/24"})
        assert r.status_code in (200, 201), r.text
        src, dst = lab.fresh_pair()
        new_connection_works(tb, src, dst, timeout=5)
        assert leader(tb) == lead, "losing one etcd member moved the controller leadership"
        pinger = Pinger(tb, a1, b1, seconds=8)
        lab.etcd.kill(second)
        started = time.monotonic()
        r = replica_api(tb, lead, "POST", "/networks",
                        json={"name": "two-down", "subnet": "10.10.0.0/24"})
        waited = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert "store unavailable" in r.json()["detail"], r.text
        assert waited < 12, f"the 503 took {waited:.1f}s"
        sent, received = pinger.result()
        assert received == sent, f"established traffic lost {sent - received} of {sent} pings"
    finally:
        for i in (first, second):
            if not lab.etcd.running(i):
                lab.etcd.start(i)
    lab.etcd.wait_healthy()
    leader(tb, timeout=15)
    r = replica_api(tb, 0, "DELETE", "/networks/one-down")
    assert r.status_code in (200, 204), r.text
    src, dst = lab.fresh_pair()
    new_connection_works(tb, src, dst, timeout=15)
