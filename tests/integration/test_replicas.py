"""Replicated controllers on etcd (docs/architecture.md, "Replicas", "Spread
masters"), with real traffic: the switches' masters are spread over the replicas.

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
import socket
import ssl
import struct
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
from testbed import BRIDGE, Container, Pinger, Testbed, tail
from testbed.tcpproxy import TcpProxy

from tests.etcdcluster import EtcdCluster
from tests.metricstext import value

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
                          tls=True, etcd_ca=etcd.ca,
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


def replica_api(tb: Testbed, i: int, method: str, path: str, *, as_replica: bool = False,
                **kwargs: Any) -> httpx.Response:
    """A request to replica `i` with the admin token; `as_replica`: with a replica's
    certificate too, as the replica endpoints require under TLS."""
    verify = tb.verify
    if as_replica:
        assert tb.ca is not None
        own = tb.ca.issue("c-test", "controller", file_stem="test-replica-client")
        verify = ssl.create_default_context(cafile=str(tb.ca.cert_file))
        verify.load_cert_chain(own.cert_file, own.key_file)
    return httpx.request(method, f"{tb.replica_url(i)}/api/v1{path}",
                         headers={"Authorization": f"Bearer {tb.token}"}, timeout=15.0,
                         verify=verify, **kwargs)


def wait_balanced(tb: Testbed, ask: int) -> None:
    """Until every replica is a member, the registered switches (h1, h2, and far1 once
    a test registered it) are spread over them within one switch, and the switches
    confirm the assigned masters."""
    def balanced() -> bool:
        shown = replica_api(tb, ask, "GET", "/replicas").json()["replicas"]
        registered = len(replica_api(tb, ask, "GET", "/hosts").json())
        loads = [len(x["switches"]) for x in shown]
        return (all(x["member"] for x in shown) and sum(loads) == registered
                and max(loads) - min(loads) <= 1)

    # a replica that came back waits for its share (--member-hold-down, 10 s)
    tb.wait_until(balanced, 30, "the switches were not spread over every replica again",
                  detail=tb.roles_dump)
    shown = replica_api(tb, ask, "GET", "/replicas").json()["replicas"]
    wanted = {h: int(x["name"][1:]) for x in shown for h in x["switches"] if h in tb.hosts}
    tb.wait_until(lambda: tb.confirmed_masters() == wanted, 5,
                  "the switches' masters are not the assigned ones", detail=tb.roles_dump)


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


def test_masters_are_spread_over_the_replicas(lab: Lab, tb: Testbed) -> None:
    masters = tb.wait_masters()
    assert len(set(masters.values())) == len(tb.hosts), masters  # 2 switches, 2 masters
    for host, i in masters.items():
        tb.wait_until(lambda h=host, i=i: tb.master_of(h) == [i], 10,  # OVS's database lags
                      f"OVS does not show replica {i} as the master of {host}",
                      detail=tb.roles_dump)
        assert sorted(tb.controller_roles(host).values()) == ["master", "slave", "slave"]
    # every replica counts every switch as connected, whatever its role
    assert [tb.replica_gauge(i, "daolinet_switches_connected") for i in range(REPLICAS)] \
        == [len(tb.hosts)] * REPLICAS
    # the store says the same, on any replica: one leader (it assigns), three members
    shown = replica_api(tb, 2, "GET", "/replicas").json()
    assert [x["name"] for x in shown["replicas"] if x["leader"]] == [shown["leader"]]
    assert all(x["member"] for x in shown["replicas"]), shown
    assert {h: f"c{i}" for h, i in masters.items()} == {
        h: x["name"] for x in shown["replicas"] for h in x["switches"]}
    assert shown["assignment_generation"] > 0
    # a connection between the two hosts is set up by both masters, each its half,
    # and any replica lists it whole (the one that masters nothing too)
    a1, b1 = lab.c["a1"], lab.c["b1"]
    assert tb.ping(a1, b1, count=2, timeout=2)
    idle = next(i for i in range(REPLICAS) if i not in masters.values())
    rows = [r for r in replica_api(tb, idle, "GET", "/routes").json()
            if {r["src_ip"], r["dst_ip"]} == {a1.ip, b1.ip}]
    assert len(rows) == 1 and rows[0]["flows"] == 4, rows
    for i in masters.values():
        # a replica endpoint: under TLS a replica's certificate, not the admin token
        refused = replica_api(tb, i, "GET", "/replicas/routes")
        assert refused.status_code == 403, refused.text
        assert "needs a replica certificate" in refused.json()["detail"]
        half = replica_api(tb, i, "GET", "/replicas/routes", as_replica=True).json()
        assert [r["flows"] for r in half if {r["src_ip"], r["dst_ip"]} == {a1.ip, b1.ip}] \
            == [2], (i, half)
    # The first traceroute of a new pair shows all three hops: h2's kernel answers the
    # probe that expires there, before h2's switch has seen the connection, because
    # h1's master exported a's route to h2's master with its half.
    src, dst = lab.fresh_pair()
    assert tb.traceroute(src, dst) == [
        tb.hosts["h1"].address, tb.hosts["h2"].address, dst.ip]


def test_switches_of_another_site_get_the_remote_targets(lab: Lab, tb: Testbed) -> None:
    """The lab's switches (the replicas' site) connect to every replica's underlay
    target; a host of another site registering is given every replica's remote one."""
    local = sorted(tb.openflow_target(i) for i in range(REPLICAS))
    remote = sorted(tb.openflow_target(i, remote=True) for i in range(REPLICAS))
    assert all(t.startswith(f"ssl:{REMOTE_IP}:") for t in remote) and len(set(remote)) == 3
    for host in tb.hosts:
        assert sorted(tb.vsctl(host, "get-controller", BRIDGE).stdout.split()) == local
        r = replica_api(tb, 1, "GET", f"/hosts/{host}")
        assert r.status_code == 200 and r.json()["openflow_targets"] == local, r.text
    register_far_host(tb)
    r = replica_api(tb, 1, "GET", "/hosts/far1")
    assert r.status_code == 200, r.text
    assert r.json()["openflow_targets"] == remote
    # GET /replicas shows both targets of every replica, on any replica
    shown = replica_api(tb, 1, "GET", "/replicas")
    assert shown.status_code == 200, shown.text
    assert [(x["name"], x["site"], x["openflow"], x["openflow_remote"])
            for x in shown.json()["replicas"]] == [
        (f"c{i}", "default", tb.openflow_target(i), tb.openflow_target(i, remote=True))
        for i in range(REPLICAS)]


def test_a_stale_generation_is_refused_by_the_switch(lab: Lab, tb: Testbed) -> None:
    """The fence a returning replica meets: a MASTER role request with a generation
    older than the assignment's is refused (OFPRRFC_STALE) and the master stays."""
    masters = tb.wait_masters()
    generation = replica_api(tb, 0, "GET", "/replicas").json()["assignment_generation"]
    assert isinstance(generation, int) and generation > 0
    for name, host in tb.hosts.items():
        answer = role_request(host.mgmt, ofproto_v1_3.OFPCR_ROLE_MASTER, generation - 1)
        assert isinstance(answer, ofproto_v1_3_parser.OFPErrorMsg), (name, answer)
        assert (answer.type, answer.code) == (
            ofproto_v1_3.OFPET_ROLE_REQUEST_FAILED, ofproto_v1_3.OFPRRFC_STALE), (name, answer)
    assert tb.confirmed_masters() == masters
    # the assignment's own generation is not stale: a request with it is answered
    # (sent as SLAVE: nothing is taken from the master).  On a loaded machine the
    # assignment may move on between reading it and asking: then it is read again,
    # and a STALE answer for the generation still current fails.
    mgmt = next(iter(tb.hosts.values())).mgmt
    for _ in range(3):
        answer = role_request(mgmt, ofproto_v1_3.OFPCR_ROLE_SLAVE, generation)
        if isinstance(answer, ofproto_v1_3_parser.OFPRoleReply):
            break
        current = replica_api(tb, 0, "GET", "/replicas").json()["assignment_generation"]
        assert current > generation, ("the current generation is refused", answer)
        generation = current
    assert isinstance(answer, ofproto_v1_3_parser.OFPRoleReply), answer
    assert answer.generation_id == generation, answer
    assert tb.ping(lab.c["a1"], lab.c["b1"], count=1, timeout=2)


def test_every_replica_serves_the_api(lab: Lab, tb: Testbed) -> None:
    r = replica_api(tb, 1, "POST", "/networks", json={"name": "green",
                                                       "subnet": "10.7.0.0/24"})
    assert r.status_code in (200, 201), r.text
    # what one replica wrote, every other serves (its watch catches up at once)
    tb.wait_until(lambda: replica_api(tb, 2, "GET", "/networks/green").status_code == 200,
                  2.0, "a network made through one replica is not served by another")
    # validation is linearizable: the same subnet through two replicas at once
    results: list[int] = []

    def create(i: int, name: str) -> None:
        results.append(replica_api(tb, i, "POST", "/networks",
                                   json={"name": name, "subnet": "10.8.0.0/24"}).status_code)

    threads = [threading.Thread(target=create, args=(i, f"dup{i}")) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) in ([200, 409], [201, 409]), results
    # live routes: every replica answers with every member's
    assert tb.ping(lab.c["a1"], lab.c["b1"], count=1, timeout=2)
    for i in range(REPLICAS):
        rows = replica_api(tb, i, "GET", "/routes")
        assert rows.status_code == 200, rows.text
        assert any(r["src_ip"] in ("10.1.0.11", "10.1.0.21") for r in rows.json()), i
    for name in ("green", "dup1", "dup2"):
        replica_api(tb, 0, "DELETE", f"/networks/{name}")


def test_killed_master_is_replaced_within_3s_and_traffic_keeps_flowing(
    lab: Lab, tb: Testbed
) -> None:
    a1, b1 = lab.c["a1"], lab.c["b1"]
    assert tb.ping(a1, b1, count=1, timeout=2)
    pinger = Pinger(tb, a1, b1, seconds=6)
    time.sleep(1.0)
    victim, before, after, takeover = tb.kill_master("h1")
    assert takeover <= TAKEOVER_LIMIT, f"takeover took {takeover:.2f}s"
    assert victim not in after.values()
    # only the dead replica's switch moved
    assert {h: i for h, i in after.items() if before[h] != victim} == \
        {h: i for h, i in before.items() if i != victim}
    src, dst = lab.fresh_pair()
    setup = new_connection_works(tb, src, dst, timeout=10)
    sent, received = pinger.result()
    assert received == sent, f"established traffic lost {sent - received} of {sent} pings"
    print(f"\ntakeover {takeover:.2f}s, first new connection {takeover + setup:.2f}s "
          f"after the kill, established pings lost {sent - received}/{sent}")
    # The killed replica comes back: after its hold-down (10 s) the assignment gives
    # it its share again (every replica one switch: h1, h2 and far1, registered
    # above), with a newer generation; the switch that moves keeps forwarding, and
    # every switch has one master.  The pings last past the move.
    pinger = Pinger(tb, a1, b1, seconds=18)
    tb.start_replica(victim)
    wait_balanced(tb, victim)
    sent, received = pinger.result()
    assert received == sent, f"rebalancing lost {sent - received} of {sent} pings"


# It caught a bug (1 in 4 runs): a returning replica was assigned switches by its
# previous process's reach report before they reconnected to it, so for a moment
# the replicas named each other as a host's master and setups waited (fixed in
# controller/cluster/masters.py; the agent also follows a named master at once).
# Molecule's failover scenario then still lost a new container's first pings once in
# about six runs, right when the returning replica was given its switch back: so
# this test now makes each pair's containers (registration included, as `docker run`
# does) in the loop, and keeps going until the switch has moved back and a few pairs
# more.  On failure it prints the agents' and replicas' logs and when the lost
# connection began.
def test_new_connections_are_set_up_while_a_returning_replica_takes_its_share(
    lab: Lab, tb: Testbed
) -> None:
    """A killed replica restarts and, after its hold-down, is given its share of the
    switches back while new containers keep being made and their first connections
    opened: each is set up by its first or second ping."""
    # three switches for three replicas, so the one that returns has one to take
    register_far_host(tb)
    victim, _, _, _ = tb.kill_master("h1")
    tb.start_replica(victim)
    waits: list[tuple[str, float]] = []
    begun: dict[str, str] = {}  # wall clock, to read beside the logs
    moved_back_at: int | None = None  # the pair during which the victim had switches again
    for i in range(1, 41):
        src = tb.container("h1", f"r{i}", "blue", ip=f"10.1.0.{100 + i}")
        dst = tb.container("h2", f"s{i}", "blue", ip=f"10.1.0.{150 + i}")
        begun[src.name] = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        started = time.monotonic()
        ok = tb.ping(src, dst, count=1, timeout=1) or tb.ping(src, dst, count=1, timeout=1)
        waits.append((src.name, time.monotonic() - started if ok else -1.0))
        if moved_back_at is None and victim_masters(tb, victim):
            moved_back_at = i
        if moved_back_at is not None and i >= moved_back_at + 3:
            break
        time.sleep(0.3)
    print(f"\nnew connections while replica {victim} returned (s): "
          + " ".join(f"{took:.2f}" for _, took in waits)
          + f"; its switches came back during pair {moved_back_at}")
    failed = [name for name, took in waits if took < 0]
    assert not failed, (
        f"new connections not set up by their second ping while replica {victim} "
        f"returned: {failed} (begun at {[begun[n] for n in failed]}; all: {waits})\n"
        f"{tb.roles_dump()}\n{tb.state_dump()}\n" + "\n".join(
            f"--- {path} ---\n{tail(path, 60)}"
            for path in [tb.hosts["h1"].agent_log, tb.hosts["h2"].agent_log]
            + [tb.replica_log(i) for i in range(REPLICAS)]))
    assert moved_back_at is not None, (
        f"replica {victim} was given no switch back within {len(waits)} pairs\n"
        f"{tb.roles_dump()}")
    wait_balanced(tb, victim)


def register_far_host(tb: Testbed) -> None:
    """Register `far1`, a host of another site whose switch never connects (as
    test_switches_of_another_site_get_the_remote_targets does), unless it is."""
    if replica_api(tb, 1, "GET", "/hosts/far1").status_code == 404:
        r = replica_api(tb, 2, "POST", "/hosts",
                        json={"name": "far1", "address": "198.51.100.11", "site": "far"})
        assert r.status_code == 200, r.text


def victim_masters(tb: Testbed, victim: int) -> bool:
    """Whether the assignment gives replica `victim` a switch (asked of the victim)."""
    try:
        shown = replica_api(tb, victim, "GET", "/replicas").json()["replicas"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False  # not serving yet
    return any(x["switches"] for x in shown if x["name"] == f"c{victim}")


def test_partitioned_master_steps_down_before_another_takes_its_switch(
    lab: Lab, tb: Testbed
) -> None:
    """Cut a switch's master off from etcd (it keeps its switches and its API): it must
    stop acting as master before any other replica becomes master of its switch."""
    before = tb.wait_masters()
    old = before["h1"]
    a1, b1 = lab.c["a1"], lab.c["b1"]
    pinger = Pinger(tb, a1, b1, seconds=6)
    time.sleep(0.5)
    cut_at = time.time()
    for proxy in lab.proxies[old]:
        proxy.cut()
    try:
        after = tb.wait_masters(10, without=old)
        new = after["h1"]
        stepped_down = log_time(tb.replica_log(old), r"membership .*(stepping down|is lost)",
                                after=cut_at - 1)
        took = log_time(tb.replica_log(new), r"master of \d+ more switch", after=cut_at)
        assert stepped_down is not None, tail(tb.replica_log(old))
        assert took is not None, tail(tb.replica_log(new))
        assert stepped_down < took, (
            f"replica {old} stepped down at {stepped_down:.3f}, after replica {new} took "
            f"its switch at {took:.3f}: two masters at once")
        src, dst = lab.fresh_pair()
        new_connection_works(tb, src, dst, timeout=10)
        sent, received = pinger.result()
        assert received == sent, f"established traffic lost {sent - received} of {sent} pings"
        metrics = httpx.get(f"{tb.replica_url(old)}/metrics", timeout=5, verify=tb.verify,
                            headers={"Authorization": f"Bearer {tb.token}"}).text
        assert value(metrics, "daolinet_switches_mastered") == 0, metrics
        assert value(metrics, "daolinet_openflow_refused_total", kind="slave") == 0, \
            "the deposed replica tried to write to a switch"
        # its API still answers reads from its index
        assert replica_api(tb, old, "GET", "/networks/blue").status_code == 200
    finally:
        for proxy in lab.proxies[old]:
            proxy.restore()
    # healed, it is a member again and gets its share back after its hold-down (10 s),
    # without a lost packet
    pinger = Pinger(tb, a1, b1, seconds=14)
    wait_balanced(tb, old)
    sent, received = pinger.result()
    assert received == sent, f"rebalancing lost {sent - received} of {sent} pings"


def test_losing_etcd_members(lab: Lab, tb: Testbed) -> None:
    """One of three members down changes nothing visible; two down stop policy changes
    with a 503 while established traffic keeps flowing; back up, all works again."""
    before = tb.wait_masters()
    a1, b1 = lab.c["a1"], lab.c["b1"]
    assert tb.ping(a1, b1, count=1, timeout=2)
    etcd_leader = lab.etcd.leader()
    assert etcd_leader is not None
    # A follower member: invisible.  (Losing the etcd leader stalls requests for its
    # raft election, up to ~2 s, which can outlast the memberships' lease margin:
    # masters may then move - established traffic flows on, docs/architecture.md.)
    first = (etcd_leader + 1) % 3
    second = etcd_leader
    lab.etcd.kill(first)
    try:
        r = replica_api(tb, 1, "POST", "/networks",
                        json={"name": "one-down", "subnet": "10.9.0.0/24"})
        assert r.status_code in (200, 201), r.text
        src, dst = lab.fresh_pair()
        new_connection_works(tb, src, dst, timeout=5)
        assert tb.confirmed_masters() == before, "losing one etcd member moved a switch"
        pinger = Pinger(tb, a1, b1, seconds=8)
        lab.etcd.kill(second)
        started = time.monotonic()
        r = replica_api(tb, 0, "POST", "/networks",
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
    tb.wait_masters(15)
    r = replica_api(tb, 0, "DELETE", "/networks/one-down")
    assert r.status_code in (200, 204), r.text
    src, dst = lab.fresh_pair()
    new_connection_works(tb, src, dst, timeout=15)
