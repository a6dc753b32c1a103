"""The agent's own metrics, in a prometheus_client registry of its own (served by
server.py; docs/architecture.md, "Metrics").

* `daolinet_agent_routes`: routes the controller's stream made this host hold (as
  applied: a snapshot sets them, a delta adds and removes);
* `daolinet_agent_reconcile_errors_total{kind}`: stream messages that failed to apply
  (snapshot, delta, nat, mesh: each answered by a nack) and failed rounds of the
  Docker engine's network sync and endpoint check;
* `daolinet_agent_stream_connected`, `daolinet_agent_stream_reconnects_total`: the
  route stream (every connection after the first is a reconnect);
* `daolinet_agent_plugin_requests_total{endpoint,outcome}`: Docker plugin requests.

Every label takes values from a bounded set: the kinds and outcomes below, and at
most MAX_ENDPOINTS endpoint names (the plugin's methods; an unknown method is
`unknown` (hostnet/docker/plugin.py), and past the bound every new name is `other`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.agents.messages import STATE_KINDS
from hostnet.docker.plugin import OUTCOMES, UNKNOWN_METHOD

DOCKER_NETWORKS = "docker_networks"
DOCKER_ENDPOINTS = "docker_endpoints"
RECONCILE_KINDS = (*sorted(STATE_KINDS), DOCKER_NETWORKS, DOCKER_ENDPOINTS)

OTHER_ENDPOINT = "other"
MAX_ENDPOINTS = 64


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._endpoints: set[str] = set()
        self.routes = Gauge(
            "daolinet_agent_routes", "routes the controller's stream made this host hold",
            registry=self.registry)
        self.reconcile_errors = Counter(
            "daolinet_agent_reconcile_errors",
            "stream messages that failed to apply (a nack) and failed rounds of the Docker "
            "network sync and endpoint check, by kind", ["kind"], registry=self.registry)
        for kind in RECONCILE_KINDS:
            self.reconcile_errors.labels(kind)  # every kind shows, from 0
        self.stream_connected = Gauge(
            "daolinet_agent_stream_connected",
            "1 while the route stream to a controller replica is open",
            registry=self.registry)
        self.stream_reconnects = Counter(
            "daolinet_agent_stream_reconnects",
            "route stream connections opened after the first (to any replica)",
            registry=self.registry)
        self.plugin_requests = Counter(
            "daolinet_agent_plugin_requests",
            "Docker plugin requests, by endpoint (the plugin's method) and outcome",
            ["endpoint", "outcome"], registry=self.registry)
        self._opened = 0

    def held(self, routes: int) -> None:
        self.routes.set(routes)

    def reconcile_failed(self, kind: str) -> None:
        if kind not in RECONCILE_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {RECONCILE_KINDS}")
        self.reconcile_errors.labels(kind).inc()

    def stream_opened(self) -> None:
        with self._lock:
            self._opened += 1
            again = self._opened > 1
        if again:
            self.stream_reconnects.inc()
        self.stream_connected.set(1)

    def stream_closed(self) -> None:
        self.stream_connected.set(0)

    def known_endpoints(self, names: Iterable[str]) -> None:
        """The plugin's methods: their series show from 0 (within the bound)."""
        for name in (*names, UNKNOWN_METHOD):
            endpoint = self._endpoint(name)
            for outcome in OUTCOMES:
                self.plugin_requests.labels(endpoint, outcome)

    def plugin_request(self, endpoint: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: {outcome!r} is not one of {OUTCOMES}")
        self.plugin_requests.labels(self._endpoint(endpoint), outcome).inc()

    def _endpoint(self, name: str) -> str:
        """`name`, or `other` once MAX_ENDPOINTS names are in use."""
        with self._lock:
            if name in self._endpoints:
                return name
            if len(self._endpoints) >= MAX_ENDPOINTS - 1:  # `other` is one of them
                self._endpoints.add(OTHER_ENDPOINT)
                return OTHER_ENDPOINT
            self._endpoints.add(name)
            return name
