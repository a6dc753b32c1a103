"""docs/grafana/daolinet.json: every query parses as PromQL and names only metrics the
code exports, collected from the controller's and the agent's registries as they are
built (not from a list kept by hand)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.registry import Collector

from controller.api.counterfloor import CounterFloor
from controller.api.metrics import ControllerCollector
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from hostnet.agent.metrics.instruments import AgentMetrics
from tests.unit.promql import PromQLError, metric_names

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "daolinet.json"
# Sample names of each family type, as Prometheus stores them.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "summary": ("", "_count", "_sum")}


def exported(collector: Collector) -> set[str]:
    return {family.name + suffix for family in collector.collect()
            for suffix in SUFFIXES[family.type]}


def controller_metrics(tmp_path: Path) -> set[str]:
    inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    inventory.register_host("h1", "198.18.0.11")
    roles = Roles()
    runtime = DatapathRuntime(inventory.index, roles)
    return exported(ControllerCollector(runtime, roles, False, floor=CounterFloor(),
                                        connlog=ConnectionLog()))


def queries(node: Any) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target, rows and nested panels included."""
    if isinstance(node, dict):
        for target in node.get("targets", []):
            yield node.get("title", "?"), target["expr"]
        for child in node.get("panels", []):
            yield from queries(child)
    elif isinstance(node, list):
        for child in node:
            yield from queries(child)


def test_every_query_names_an_exported_metric(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = controller_metrics(tmp_path) | exported(AgentMetrics().registry)
    # the names are samples as stored: a histogram's base name or a counter without
    # _total is no series
    assert {"daolinet_setup_seconds", "daolinet_setups"}.isdisjoint(known)
    found = list(queries(dashboard["panels"]))
    assert len(found) >= 10
    used: set[str] = set()
    for title, expr in found:
        names = metric_names(expr)
        assert names, f"{title}: {expr} selects no metric"
        assert names <= known, f"{title}: {sorted(names - known)} not exported ({expr})"
        used |= names
    # the topics the dashboard is for (issue 21): each has a panel
    for wanted in ("daolinet_setups_total", "daolinet_setup_seconds_bucket",
                   "daolinet_packet_ins_dropped_total", "daolinet_switches_connected",
                   "daolinet_agent_stream_connected", "daolinet_connection_log_events_total",
                   "daolinet_agent_reconcile_errors_total"):
        assert wanted in used, wanted


def test_every_panel_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("query", [
    "sum(rate(daolinet_setups_total[5m])",  # unbalanced
    "rate(daolinet_setups_total)",  # rate of an instant vector
    "sum(daolinet_setups_total[5m])",  # aggregation of a range vector
    "histogram_quantile(daolinet_setup_seconds_bucket)",  # no quantile
    "frobnicate(daolinet_setups_total)",  # no such function
    'daolinet_setups_total{host~"h1"}',  # no such matcher
    "daolinet_setups_total[5m]",  # a range cannot be graphed
])
def test_the_parser_refuses_what_prometheus_would(query: str) -> None:
    with pytest.raises(PromQLError):
        metric_names(query)


def test_the_parser_finds_every_selected_name() -> None:
    assert metric_names(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{host="h1"}[$__rate_interval])))'
        " / on_x + topk(3, sum without (reason) (b_total)) > bool 2") == {
        "a_bucket", "on_x", "b_total"}
    assert metric_names('{__name__="c_total", job="x"}') == {"c_total"}
    assert metric_names("0.5 * (d + e)") == {"d", "e"}
