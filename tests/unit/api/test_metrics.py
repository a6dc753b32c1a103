"""GET /metrics exposes the core's counters in the Prometheus text format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from controller.api import metrics
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.runtime import DatapathRuntime
from controller.datapath.state import DROP_SWITCH_BUDGET, DROP_UNKNOWN_PORT
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore


@dataclass
class Served:
    """A real DatapathRuntime, its roles, and a client of the app serving its /metrics."""

    roles: Roles
    runtime: DatapathRuntime
    client: TestClient

    def lines(self) -> set[str]:
        return set(self.client.get("/metrics").text.splitlines())


def served(tmp_path: Path, **context: Any) -> Served:
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    roles = Roles()
    runtime = DatapathRuntime(inventory.index, roles)
    ctx = ApiContext(inventory=inventory, token="t", runtime=runtime, openflow_host="0.0.0.0",
                     openflow_port=6653, roles=roles, **context)
    app = create_app(ctx)
    app.include_router(metrics.router)
    return Served(roles, runtime, TestClient(app))


def test_metrics_reports_counters_and_setup_histogram(tmp_path: Path) -> None:
    app = served(tmp_path)
    counters = app.runtime.core.state.counters
    counters.packet_ins, counters.setups, counters.denials = 7, 3, 2
    for seconds in (0.0004, 0.0015, 0.03):
        counters.setup_latency.observe(seconds)
    lines = app.lines()
    assert "daolinet_packet_ins_total 7" in lines
    assert "daolinet_setups_total 3" in lines
    assert "daolinet_denials_total 2" in lines
    assert "daolinet_live_routes 0" in lines
    assert 'daolinet_setup_seconds_bucket{le="0.0005"} 1' in lines
    assert 'daolinet_setup_seconds_bucket{le="0.002"} 2' in lines
    assert 'daolinet_setup_seconds_bucket{le="+Inf"} 3' in lines
    assert "daolinet_setup_seconds_count 3" in lines


def test_metrics_per_host_and_drop_counters(tmp_path: Path) -> None:
    app = served(tmp_path)
    state = app.runtime.core.state
    state.count("h1", "packet_ins", 5)
    state.count("h2", "packet_ins", 2)
    state.count("h1", "denied_packets", 40)
    state.live_denied["h1"] = 2
    state.live_spoofed["h2"] = 9
    lines = app.lines()
    assert "daolinet_packet_ins_total 7" in lines
    assert 'daolinet_host_packet_ins_total{host="h1"} 5' in lines
    assert 'daolinet_host_packet_ins_total{host="h2"} 2' in lines
    assert "daolinet_denied_packets_total 42" in lines
    assert 'daolinet_host_denied_packets_total{host="h1"} 42' in lines
    assert "daolinet_spoofed_packets_total 9" in lines
    assert 'daolinet_host_setup_seconds_count{host="h1"} 0' in lines


def test_metrics_replica_role_switches_and_refusals(tmp_path: Path) -> None:
    app = served(tmp_path)
    roles, lines = app.roles, app.lines

    assert {"daolinet_replica_leader 0", "daolinet_switches_mastered 0",
            'daolinet_openflow_refused_total{kind="role"} 0',
            'daolinet_openflow_refused_total{kind="slave"} 0'} <= lines()
    roles.set_master(7)
    roles.confirm_master(1, True)
    roles.confirm_master(2, True)
    roles.count_refusal("slave")
    assert {"daolinet_replica_leader 1", "daolinet_switches_mastered 2",
            'daolinet_openflow_refused_total{kind="slave"} 1'} <= lines()
    roles.set_master(None)  # deposed: no switch is ours any more
    assert {"daolinet_replica_leader 0", "daolinet_switches_mastered 0"} <= lines()


def test_metrics_switches_connected_whatever_their_role(tmp_path: Path) -> None:
    app = served(tmp_path)
    roles = app.roles

    def connected() -> set[str]:
        return {line for line in app.lines() if line.startswith("daolinet_switches_connected ")}

    assert connected() == {"daolinet_switches_connected 0"}
    roles.switch_seen(1, True)
    roles.switch_seen(2, True)
    roles.switch_seen(2, True)  # a reconnection
    assert connected() == {"daolinet_switches_connected 2"}  # as a follower (no master)
    roles.set_master(3)
    roles.set_master(None)
    assert connected() == {"daolinet_switches_connected 2"}  # roles do not change it
    roles.switch_seen(1, False)
    assert connected() == {"daolinet_switches_connected 1"}


def test_metrics_switch_connections_refused_by_reason(tmp_path: Path) -> None:
    refused = {"tls_handshake": 2, "foreign_dpid": 1}
    lines = served(tmp_path, switch_refusals=lambda: refused).lines()
    assert {'daolinet_switch_connections_refused_total{reason="tls_handshake"} 2',
            'daolinet_switch_connections_refused_total{reason="foreign_dpid"} 1'} <= lines


def test_metrics_count_packet_ins_dropped_by_reason(tmp_path: Path) -> None:
    app = served(tmp_path)
    state = app.runtime.core.state
    for _ in range(3):
        state.drop("h1", DROP_SWITCH_BUDGET)
    state.drop("h2", DROP_UNKNOWN_PORT)
    lines = app.lines()
    assert 'daolinet_packet_ins_dropped_total{reason="switch_budget"} 3' in lines
    assert 'daolinet_packet_ins_dropped_total{reason="unknown_port"} 1' in lines
    assert 'daolinet_host_packet_ins_dropped_total{host="h1",reason="switch_budget"} 3' in lines
    assert 'daolinet_host_packet_ins_dropped_total{host="h1",reason="unknown_port"} 0' in lines
    assert 'daolinet_host_packet_ins_dropped_total{host="h2",reason="unknown_port"} 1' in lines


def test_the_setup_histogram_counts_every_setup_cumulatively(tmp_path: Path) -> None:
    """Past the 1,000 setups the old histogram kept, its count still grows and its
    buckets never go down (rate() and histogram_quantile() need both)."""
    app = served(tmp_path)
    hist = app.runtime.core.state.counters.setup_latency

    def bucket(le: str) -> int:
        (line,) = [x for x in app.lines()
                   if x.startswith(f'daolinet_setup_seconds_bucket{{le="{le}"}} ')]
        return int(line.split()[-1])

    for _ in range(1500):
        hist.observe(0.0003)
    fast = bucket("0.0005")
    for _ in range(1500):
        hist.observe(0.3)
    lines = app.lines()
    assert "daolinet_setup_seconds_count 3000" in lines
    assert bucket("0.0005") == fast == 1500  # not pushed out by the slower ones
    assert bucket("0.5") == bucket("+Inf") == 3000
    assert "daolinet_setup_seconds_sum 450.450000" in lines


def test_metrics_show_the_connection_log(tmp_path: Path) -> None:
    assert not any("connection_log" in x for x in served(tmp_path / "off").lines())
    connlog = ConnectionLog(writing=True)
    connlog.write_dropped = 4
    lines = served(tmp_path, connlog=connlog).lines()
    assert {"daolinet_connection_log_entries 0",
            "daolinet_connection_log_lines_dropped_total 4"} <= lines
