"""The agent's /metrics (hostnet/agent/metrics/): what it counts,
its bounded labels, and where it may listen: loopback in plain HTTP; past it, or with
the host's TLS files, only over TLS with a client certificate of the deployment's CA."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from controller.trust.tls import TlsFiles
from hostnet.agent.config import AgentConfig
from hostnet.agent.metrics.instruments import MAX_ENDPOINTS, OTHER_ENDPOINT, AgentMetrics
from hostnet.agent.metrics.server import MetricsServer
from hostnet.main import main
from tests.metricstext import label_values, value
from tests.pki import TestCA
from tests.unit.hostnet.dockerworld import World, run
from tests.unit.hostnet.test_agent import FakeTable, make_applier

BASE = {"controller": "http://127.0.0.1:9", "host": "h", "ovsdb": "unix:/nonexistent"}


def text(metrics: AgentMetrics) -> str:
    return generate_latest(metrics.registry).decode()


# --- where it listens ---------------------------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0", "198.18.0.11", "::"])
def test_a_bind_past_loopback_without_tls_is_refused_naming_the_setting(
    tmp_path: Path, address: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match=f"--metrics-address {address}: not a loopback"):
        AgentConfig(**BASE, token_file=tmp_path / "t", metrics_address=address)
    argv = ["agent", "--controller", "http://127.0.0.1:9", "--token-file", "t", "--host", "h",
            "--ovsdb", "unix:/nonexistent", "--metrics-address", address]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--metrics-address {address}: not a loopback" in err


def test_loopback_or_tls_or_off_is_accepted(tmp_path: Path) -> None:
    assert AgentConfig(**BASE, token_file=tmp_path / "t").metrics_address == "127.0.0.1"
    AgentConfig(**BASE, token_file=tmp_path / "t", metrics_address="::1")
    AgentConfig(**BASE, token_file=tmp_path / "t", metrics_address="0.0.0.0", metrics_port=0)
    tls = {"tls_ca": tmp_path / "ca", "tls_cert": tmp_path / "c", "tls_key": tmp_path / "k"}
    cfg = AgentConfig(**{**BASE, "controller": "https://127.0.0.1:9"}, **tls,
                      metrics_address="0.0.0.0")
    assert cfg.metrics_address == "0.0.0.0"
    with pytest.raises(ValidationError, match="--metrics-address: 'localhost' is not an IP"):
        AgentConfig(**BASE, token_file=tmp_path / "t", metrics_address="localhost")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def tls_server(ca: TestCA) -> Iterator[tuple[str, TestCA]]:
    host = ca.issue("h1", "host")
    metrics = AgentMetrics()
    metrics.held(3)
    server = MetricsServer(metrics.registry, "127.0.0.1", 0,
                           TlsFiles(ca.cert_file, host.cert_file, host.key_file))
    port = server.start()
    try:
        yield f"https://127.0.0.1:{port}/metrics", ca
    finally:
        server.close()


def client_context(ca: TestCA, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def test_over_tls_a_scraper_needs_a_certificate_of_the_deployment(
    tls_server: tuple[str, TestCA], tmp_path: Path) -> None:
    url, ca = tls_server
    scraper = ca.issue("prometheus", "operator")
    ok = httpx.get(url, verify=client_context(ca, (scraper.cert_file, scraper.key_file)),
                   timeout=5)
    assert ok.status_code == 200 and value(ok.text, "daolinet_agent_routes") == 3
    with pytest.raises(httpx.HTTPError):  # no certificate: the handshake fails
        httpx.get(url, verify=client_context(ca, None), timeout=5)
    other = TestCA(tmp_path / "other")
    stranger = other.issue("prometheus", "operator")
    with pytest.raises(httpx.HTTPError):  # a certificate of another CA
        httpx.get(url, verify=client_context(ca, (stranger.cert_file, stranger.key_file)),
                  timeout=5)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
        httpx.get(url.replace("https:", "http:"), timeout=5)


def test_plain_http_on_loopback() -> None:
    metrics = AgentMetrics()
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    port = server.start()
    try:
        metrics.held(2)
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert r.status_code == 200 and value(r.text, "daolinet_agent_routes") == 2
    finally:
        server.close()


# --- what it counts -----------------------------------------------------------------

def test_routes_held_and_reconcile_errors_follow_the_stream_messages() -> None:
    applier = make_applier(FakeTable())
    snap = {"type": "snapshot", "seq": 1, "routes": [
        {"kind": "via", "dst": "10.1.0.6", "via": "198.18.0.12"},
        {"kind": "local", "dst": "10.1.0.5", "lladdr": "02:da:0a:01:00:05"}]}
    delta = {"type": "delta", "seq": 2, "add": [
        {"kind": "via", "dst": "10.1.0.7", "via": "198.18.0.12"},
        {"kind": "via", "dst": "10.1.0.8", "via": "198.18.0.12"}],
        "remove": [{"kind": "via", "dst": "10.1.0.6", "via": "198.18.0.12"}]}
    assert applier.apply(snap) == {"type": "ack", "seq": 1}
    assert value(text(applier.metrics), "daolinet_agent_routes") == 2
    assert applier.apply(delta) == {"type": "ack", "seq": 2}
    assert value(text(applier.metrics), "daolinet_agent_routes") == 3
    assert applier.apply({"type": "delta", "seq": 3, "add": [{"kind": "via"}]})["type"] == "nack"
    failing = make_applier(FakeTable(fail=ValueError("no bridge")))
    failing.metrics = applier.metrics  # one agent's metrics
    assert failing.apply({"type": "snapshot", "seq": 4, "routes": []})["type"] == "nack"
    after = text(applier.metrics)
    assert value(after, "daolinet_agent_reconcile_errors_total", kind="delta") == 1
    assert value(after, "daolinet_agent_reconcile_errors_total", kind="snapshot") == 1
    assert value(after, "daolinet_agent_reconcile_errors_total", kind="nat") == 0
    assert value(after, "daolinet_agent_routes") == 3  # a failed message changes nothing


def test_stream_reconnects_count_every_connection_after_the_first() -> None:
    metrics = AgentMetrics()
    metrics.stream_opened()
    assert value(text(metrics), "daolinet_agent_stream_reconnects_total") == 0
    assert value(text(metrics), "daolinet_agent_stream_connected") == 1
    metrics.stream_closed()
    assert value(text(metrics), "daolinet_agent_stream_connected") == 0
    metrics.stream_opened()
    metrics.stream_closed()
    metrics.stream_opened()
    assert value(text(metrics), "daolinet_agent_stream_reconnects_total") == 2


def test_plugin_requests_by_endpoint_and_outcome(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def go() -> None:
        await world.ok("h1", "IpamDriver.RequestPool", {"Pool": "10.20.0.0/24"})
        status, _, _ = await world.call("h1", "IpamDriver.RequestPool", {"Pool": "0.0.0.0/0"})
        assert status == 500
        status, _, _ = await world.call("h1", "Nonsense.Method")
        assert status == 404
    run(go())
    out = text(world.metrics["h1"])
    name = "daolinet_agent_plugin_requests_total"
    assert value(out, name, endpoint="IpamDriver.RequestPool", outcome="ok") == 1
    assert value(out, name, endpoint="IpamDriver.RequestPool", outcome="refused") == 1
    assert value(out, name, endpoint="unknown", outcome="bad_request") == 1
    assert "Nonsense.Method" not in out  # an unknown method names no series
    assert value(text(world.metrics["h2"]), name, endpoint="IpamDriver.RequestPool",
                 outcome="ok") is None


def test_plugin_endpoint_labels_are_bounded() -> None:
    metrics = AgentMetrics()
    for i in range(3 * MAX_ENDPOINTS):
        metrics.plugin_request(f"Made.Up{i}", "ok")
    endpoints = label_values(text(metrics), "daolinet_agent_plugin_requests_total", "endpoint")
    assert len(endpoints) == MAX_ENDPOINTS and OTHER_ENDPOINT in endpoints
    assert value(text(metrics), "daolinet_agent_plugin_requests_total",
                 endpoint=OTHER_ENDPOINT, outcome="ok") == 2 * MAX_ENDPOINTS + 1
    with pytest.raises(ValueError, match="outcome: 'weird'"):
        metrics.plugin_request("Made.Up0", "weird")
    with pytest.raises(ValueError, match="kind: 'other'"):
        metrics.reconcile_failed("other")
