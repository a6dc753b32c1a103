"""GET /metrics exposes the controller's metrics in the Prometheus text format,
rendered by prometheus_client and read back with its parser."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api import metrics
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.connections import ConnEvent
from controller.datapath.runtime import DatapathRuntime
from controller.datapath.state import DROP_SWITCH_BUDGET, DROP_UNKNOWN_PORT, SETUP_BUCKETS
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.sqlite import SqliteStore
from tests.metricstext import label_values, samples, value


@dataclass
class Served:
    """A real DatapathRuntime, its roles, and a client of the app serving its /metrics."""

    roles: Roles
    runtime: DatapathRuntime
    inventory: Inventory
    client: TestClient

    def text(self) -> str:
        r = self.client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=")
        return r.text

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.text(), name, **labels)


def served(tmp_path: Path, **context: Any) -> Served:
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    roles = Roles()
    runtime = DatapathRuntime(inventory.index, roles)
    ctx = ApiContext(inventory=inventory, token="t", runtime=runtime, openflow_host="0.0.0.0",
                     openflow_port=6653, roles=roles, **context)
    app = create_app(ctx)
    app.include_router(metrics.router)
    return Served(roles, runtime, inventory, TestClient(app))


def test_metrics_reports_counters_and_setup_histogram(tmp_path: Path) -> None:
    app = served(tmp_path)
    counters = app.runtime.core.state.counters
    counters.packet_ins, counters.setups, counters.denials = 7, 3, 2
    for seconds in (0.0004, 0.0015, 0.03):
        counters.setup_latency.observe(seconds)
    text = app.text()
    assert "# TYPE daolinet_packet_ins_total counter" in text
    assert "# TYPE daolinet_setup_seconds histogram" in text
    assert value(text, "daolinet_packet_ins_total") == 7
    assert value(text, "daolinet_setups_total") == 3
    assert value(text, "daolinet_denials_total") == 2
    assert value(text, "daolinet_live_routes") == 0
    assert value(text, "daolinet_setup_seconds_bucket", le="0.0005") == 1
    assert value(text, "daolinet_setup_seconds_bucket", le="0.002") == 2
    assert value(text, "daolinet_setup_seconds_bucket", le="+Inf") == 3
    assert value(text, "daolinet_setup_seconds_count") == 3


def test_metrics_per_host_and_drop_counters(tmp_path: Path) -> None:
    app = served(tmp_path)
    state = app.runtime.core.state
    state.count("h1", "packet_ins", 5)
    state.count("h2", "packet_ins", 2)
    state.count("h1", "denied_packets", 40)
    state.live_denied["h1"] = 2
    state.live_spoofed["h2"] = 9
    text = app.text()
    assert value(text, "daolinet_packet_ins_total") == 7
    assert value(text, "daolinet_host_packet_ins_total", host="h1") == 5
    assert value(text, "daolinet_host_packet_ins_total", host="h2") == 2
    assert value(text, "daolinet_denied_packets_total") == 42
    assert value(text, "daolinet_host_denied_packets_total", host="h1") == 42
    assert value(text, "daolinet_spoofed_packets_total") == 9
    assert value(text, "daolinet_host_setup_seconds_count", host="h1") == 0


def test_metrics_replica_role_switches_and_refusals(tmp_path: Path) -> None:
    app = served(tmp_path)
    roles = app.roles

    def read() -> dict[str, float | None]:
        text = app.text()
        return {"leader": value(text, "daolinet_replica_leader"),
                "mastered": value(text, "daolinet_switches_mastered"),
                "role": value(text, "daolinet_openflow_refused_total", kind="role"),
                "slave": value(text, "daolinet_openflow_refused_total", kind="slave")}

    assert read() == {"leader": 0, "mastered": 0, "role": 0, "slave": 0}
    roles.set_master(7)
    roles.confirm_master(1, True)
    roles.confirm_master(2, True)
    roles.count_refusal("slave")
    assert read() == {"leader": 1, "mastered": 2, "role": 0, "slave": 1}
    assert label_values(app.text(), "daolinet_switch_mastered", "dpid") == {"1", "2"}
    roles.set_master(None)  # deposed: no switch is ours any more
    assert read() == {"leader": 0, "mastered": 0, "role": 0, "slave": 1}


def test_metrics_switches_connected_whatever_their_role(tmp_path: Path) -> None:
    app = served(tmp_path)
    roles = app.roles

    def connected() -> float | None:
        return app.value("daolinet_switches_connected")

    assert connected() == 0
    roles.switch_seen(1, True)
    roles.switch_seen(2, True)
    roles.switch_seen(2, True)  # a reconnection
    assert connected() == 2  # as a follower (no master)
    roles.set_master(3)
    roles.set_master(None)
    assert connected() == 2  # roles do not change it
    roles.switch_seen(1, False)
    assert connected() == 1


def test_metrics_switch_connections_refused_by_reason(tmp_path: Path) -> None:
    refused = {"tls_handshake": 2, "foreign_dpid": 1}
    text = served(tmp_path, switch_refusals=lambda: refused).text()
    assert value(text, "daolinet_switch_connections_refused_total", reason="tls_handshake") == 2
    assert value(text, "daolinet_switch_connections_refused_total", reason="foreign_dpid") == 1


def test_metrics_count_packet_ins_dropped_by_reason(tmp_path: Path) -> None:
    app = served(tmp_path)
    state = app.runtime.core.state
    for _ in range(3):
        state.drop("h1", DROP_SWITCH_BUDGET)
    state.drop("h2", DROP_UNKNOWN_PORT)
    text = app.text()
    name = "daolinet_host_packet_ins_dropped_total"
    assert value(text, "daolinet_packet_ins_dropped_total", reason="switch_budget") == 3
    assert value(text, "daolinet_packet_ins_dropped_total", reason="unknown_port") == 1
    assert value(text, name, host="h1", reason="switch_budget") == 3
    assert value(text, name, host="h1", reason="unknown_port") == 0
    assert value(text, name, host="h2", reason="unknown_port") == 1


def test_the_setup_histogram_counts_every_setup_cumulatively(tmp_path: Path) -> None:
    """Past the 1,000 setups the old histogram kept, its count still grows and its
    buckets never go down (rate() and histogram_quantile() need both)."""
    app = served(tmp_path)
    hist = app.runtime.core.state.counters.setup_latency

    def bucket(le: str) -> float | None:
        return app.value("daolinet_setup_seconds_bucket", le=le)

    for _ in range(1500):
        hist.observe(0.0003)
    fast = bucket("0.0005")
    for _ in range(1500):
        hist.observe(0.3)
    text = app.text()
    assert value(text, "daolinet_setup_seconds_count") == 3000
    assert bucket("0.0005") == fast == 1500  # not pushed out by the slower ones
    assert bucket("0.5") == bucket("+Inf") == 3000
    assert value(text, "daolinet_setup_seconds_sum") == pytest.approx(450.45)


def test_every_histogram_is_cumulative_in_its_bounds(tmp_path: Path) -> None:
    """Each bucket holds at least the one below it, the buckets are the configured
    bounds plus +Inf, and +Inf equals _count, for the total and per host."""
    app = served(tmp_path)
    state = app.runtime.core.state
    for i, seconds in enumerate((0.0001, 0.0007, 0.003, 0.003, 0.04, 0.2, 3.0)):
        state.counters.setup_latency.observe(seconds)
        state.host_counters.setdefault(f"h{i % 2}", type(state.counters)()
                                       ).setup_latency.observe(seconds)
    everything = samples(app.text())
    for name, labels in (("daolinet_setup_seconds", {}),
                         ("daolinet_host_setup_seconds", {"host": "h0"}),
                         ("daolinet_host_setup_seconds", {"host": "h1"})):
        bounds = [*(str(b) for b in SETUP_BUCKETS), "+Inf"]
        buckets = [everything[f"{name}_bucket", frozenset({**labels, "le": le}.items())]
                   for le in bounds]
        assert buckets == sorted(buckets), (name, labels, buckets)
        assert buckets[-1] == everything[f"{name}_count", frozenset(labels.items())]
    assert everything["daolinet_setup_seconds_count", frozenset()] == 7


def test_counters_never_go_down_across_scrapes(tmp_path: Path) -> None:
    """A derived counter (denied packets: expired deny flows plus the live ones at
    their last dump) may shrink for a moment; Prometheus would read that as a
    restart, so the exposed value keeps its last height until the count passes it."""
    app = served(tmp_path)
    state = app.runtime.core.state
    state.count("h1", "denied_packets", 10)
    state.live_denied["h1"] = 5
    assert app.value("daolinet_denied_packets_total") == 15
    state.live_denied["h1"] = 0  # the live flow went; its count is not added yet
    assert app.value("daolinet_denied_packets_total") == 15
    assert app.value("daolinet_host_denied_packets_total", host="h1") == 15
    state.count("h1", "denied_packets", 7)  # its removal counted, and more
    assert app.value("daolinet_denied_packets_total") == 17
    state.count("h1", "packet_ins", 1)
    scrapes = [samples(app.text()) for _ in range(3)]
    state.count("h1", "packet_ins", 2)
    scrapes.append(samples(app.text()))
    for before, after in itertools.pairwise(scrapes):
        for key, v in before.items():
            if key[0].endswith(("_total", "_count", "_bucket", "_sum")) and key in after:
                assert after[key] >= v, key


def test_per_host_series_are_bounded(tmp_path: Path) -> None:
    """Past --metrics-hosts hosts (by name) a host counts in the totals only; the
    number of those hosts is its own gauge.  Switches by dpid have the same bound."""
    app = served(tmp_path, metrics_hosts=3)
    for i in range(8):
        name = f"h{i}"
        app.inventory.index.put_host(Host(name=name, dpid=i + 1,
                                          address=ipaddress.IPv4Address(f"198.18.0.{i + 1}")))
        app.runtime.core.state.count(name, "packet_ins", 1)
        app.roles.set_master(1)
        app.roles.confirm_master(i + 1, True)
    text = app.text()
    assert label_values(text, "daolinet_host_packet_ins_total", "host") == {"h0", "h1", "h2"}
    assert label_values(text, "daolinet_host_live_routes", "host") == {"h0", "h1", "h2"}
    assert label_values(text, "daolinet_host_setup_seconds_count", "host") == {"h0", "h1", "h2"}
    assert label_values(text, "daolinet_switch_mastered", "dpid") == {"1", "2", "3"}
    assert value(text, "daolinet_hosts_unlabelled") == 5
    assert value(text, "daolinet_packet_ins_total") == 8  # the totals count every host
    assert value(text, "daolinet_switches_mastered") == 8


def test_metrics_show_the_connection_log(tmp_path: Path) -> None:
    assert "connection_log" not in served(tmp_path / "off").text()
    connlog = ConnectionLog(writing=True)
    connlog.write_dropped = 4

    def event(kind: Any, verdict: str) -> ConnEvent:
        return ConnEvent(kind, ipaddress.IPv4Address("10.0.0.1"),
                         ipaddress.IPv4Address("10.0.0.2"), 6, 1000, 80, None, None, verdict,
                         "test", "default", None, None, "h1")

    connlog.record([event("allowed", "allow"), event("denied", "deny"),
                    event("denied", "deny")])  # the same pair again: one summary entry
    text = served(tmp_path, connlog=connlog).text()
    assert value(text, "daolinet_connection_log_entries") == 2
    assert value(text, "daolinet_connection_log_lines_dropped_total") == 4
    name = "daolinet_connection_log_events_total"
    assert value(text, name, event="allowed", verdict="allow") == 1
    assert value(text, name, event="denied", verdict="deny") == 1
