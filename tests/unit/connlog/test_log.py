"""The connection log's ring (controller/connlog/log.py): bounds by count and age,
flood summaries, filters, pagination, and the JSON-lines writer."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

from controller.connlog.log import OPEN_MAX, ConnectionLog, Filters
from controller.connlog.writer import JsonLinesWriter
from controller.datapath.connections import ConnEvent

IP = ipaddress.IPv4Address


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def ev(event: str = "allowed", src: str = "a", dst: str = "b", dport: int | None = 80,
       rule: str | None = None, count: int = 1, src_ip: str = "10.1.0.5") -> ConnEvent:
    return ConnEvent(
        event, IP(src_ip), IP("10.1.0.6"), 6, 40000, dport,  # type: ignore[arg-type]
        (src, "web", "h1", "s1"), (dst, "db", "h2", "s2"),
        "allow" if event != "denied" else "deny", "same network web",
        "firewall" if rule else "network", rule, "underlay" if event != "denied" else None,
        "h1", count,
    )


def test_the_ring_keeps_at_most_its_count_newest_first_out() -> None:
    log = ConnectionLog(max_entries=5, clock=Clock())
    log.record([ev(dport=p) for p in range(1, 9)])
    assert len(log) == 5
    page = log.query(Filters(), limit=100)
    assert [e.event.dport for e in page.entries] == [4, 5, 6, 7, 8]
    assert not page.more


def test_entries_older_than_the_age_bound_go() -> None:
    clock = Clock()
    log = ConnectionLog(max_age=60.0, clock=clock)
    log.record([ev(dport=1)])
    clock.now += 30
    log.record([ev(dport=2)])
    clock.now += 40  # the first is 70 s old
    assert [e.event.dport for e in log.query(Filters(), 10).entries] == [2]
    clock.now += 100
    log.record([ev(dport=3)])
    assert len(log) == 1


def test_times_are_unique_and_increasing_within_one_clock_tick() -> None:
    log = ConnectionLog(clock=Clock())
    log.record([ev(dport=p) for p in range(3)])
    log.record([ev(dport=9)])
    times = [e.time for e in log.query(Filters(), 10).entries]
    assert times == sorted(times) and len(set(times)) == 4


def test_a_denied_flood_is_one_entry_with_a_count_per_interval() -> None:
    clock = Clock()
    log = ConnectionLog(interval=10.0, clock=clock)
    for _ in range(500):
        log.record([ev("denied")])
        clock.now += 0.01
    log.record([ev("denied", count=1200)])  # the drop flow's packets, when it went
    (entry,) = log.query(Filters(), 10).entries
    assert entry.count == 1700 and entry.last > entry.time
    clock.now += 11  # the interval closed: the next denial is a new entry
    log.record([ev("denied")])
    assert [e.count for e in log.query(Filters(), 10).entries] == [1700, 1]


def test_denials_of_other_pairs_or_ports_are_not_merged() -> None:
    log = ConnectionLog(clock=Clock())
    log.record([ev("denied"), ev("denied", dport=22), ev("denied", src_ip="10.1.0.7"),
                ev("denied")])
    assert [e.count for e in log.query(Filters(), 10).entries] == [2, 1, 1]


def test_open_summaries_stay_bounded() -> None:
    log = ConnectionLog(interval=0.0, clock=Clock())
    for i in range(OPEN_MAX + 50):
        log.record([ev("denied", src_ip=str(IP("10.8.0.0") + i))])
    assert len(log._open) <= OPEN_MAX + 1


def test_filters_select_by_container_network_host_verdict_rule_and_time() -> None:
    clock = Clock()
    log = ConnectionLog(clock=clock)
    t0 = clock.now
    log.record([ev(src="x"), ev("denied", rule="ab12cd"), replace(ev(), observer="h9")])
    clock.now += 100
    log.record([ev("expired", dst="y")])

    def q(**kw: object) -> list[str]:
        return [e.event.event for e in log.query(Filters(**kw), 10).entries]  # type: ignore[arg-type]

    assert q(container="x") == ["allowed"]
    assert q(container="y") == ["expired"]
    assert q(network="db") == ["allowed", "denied", "allowed", "expired"]
    assert q(network="nope") == []
    assert q(host="h9") == ["allowed"]  # the host that saw it
    assert len(q(host="h2")) == 4
    assert q(verdict="deny") == ["denied"]
    assert q(event="expired") == ["expired"]
    assert q(rule="ab12") == ["denied"] and q(rule="zz") == []
    assert q(kind="firewall") == ["denied"]
    assert q(since=t0 + 50) == ["expired"]
    assert q(until=t0 + 50) == ["allowed", "denied", "allowed"]


def test_pages_go_back_with_before_and_follow_with_after() -> None:
    log = ConnectionLog(clock=Clock())
    log.record([ev(dport=p) for p in range(1, 11)])
    page = log.query(Filters(), limit=4)
    assert [e.event.dport for e in page.entries] == [7, 8, 9, 10] and page.more
    back = log.query(Filters(), limit=4, before=page.entries[0].time)
    assert [e.event.dport for e in back.entries] == [3, 4, 5, 6] and back.more
    last = log.query(Filters(), limit=4, before=back.entries[0].time)
    assert [e.event.dport for e in last.entries] == [1, 2] and not last.more
    follow = log.query(Filters(), limit=3, after=last.entries[-1].time)
    assert [e.event.dport for e in follow.entries] == [3, 4, 5] and follow.more
    log.record([ev(dport=11)])
    tail = log.query(Filters(), limit=100, after=page.entries[-1].time)
    assert [e.event.dport for e in tail.entries] == [11] and not tail.more


def test_an_entry_renders_both_identities_and_its_decision() -> None:
    log = ConnectionLog(clock=Clock())
    log.record([ev(rule="r1")])
    (entry,) = log.query(Filters(), 1).entries
    d = entry.to_dict("c0")
    assert d["src"] == {"container": "a", "network": "web", "host": "h1", "site": "s1",
                        "ip": "10.1.0.5", "port": 40000}
    assert d["dst"]["container"] == "b" and d["dst"]["port"] == 80
    assert (d["proto"], d["rule_id"], d["kind"], d["path"], d["replica"]) == (
        "tcp", "r1", "firewall", "underlay", "c0")
    json.dumps(d)  # serialisable as it is


def test_the_writer_appends_json_lines_and_a_flood_once_with_its_count(tmp_path: Path) -> None:
    clock = Clock()
    log = ConnectionLog(interval=10.0, clock=clock, writing=True)
    out = tmp_path / "connections.jsonl"
    writer = JsonLinesWriter(log, out, "c0")
    log.record([ev(), ev("denied")])
    log.record([ev("denied")] * 5)
    assert writer.flush() == 1  # the allowed entry; the flood's interval is still open
    clock.now += 11
    assert writer.flush() == 1  # now closed: written once, with its count
    log.record([ev("denied", dport=22)])
    writer.stop()  # the open summary is written at the end
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["event"], x["count"]) for x in lines] == [
        ("allowed", 1), ("denied", 6), ("denied", 1)]


def test_the_writer_loses_lines_not_memory_when_it_cannot_keep_up(tmp_path: Path) -> None:
    from controller.connlog import log as logmod

    log = ConnectionLog(clock=Clock(), writing=True)
    n = logmod.WRITE_QUEUE + 10
    log.record([ev()] * n)
    assert log.write_dropped == 10
    assert len(log.drain()) == logmod.WRITE_QUEUE


def test_a_writer_that_cannot_write_keeps_the_controller_running(tmp_path: Path) -> None:
    log = ConnectionLog(clock=Clock(), writing=True)
    writer = JsonLinesWriter(log, tmp_path / "missing-dir" / "x.jsonl", "c0")
    log.record([ev()])
    assert writer.flush() == 0
