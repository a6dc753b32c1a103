"""Readiness and metrics on the namespace testbed (docs/operations.md, "Readiness",
"Metrics").

* After a controller restart, /readyz says not ready until the switches have
  connected again and confirmed it as master (and the agents stream); once it says
  ready, /metrics agrees.  A registered host whose switch never comes back holds it
  back for --ready-wait seconds, then only counts.
* Each agent's own /metrics (127.0.0.1 in its host's namespace) counts real events:
  the routes a connection installs, the stream's reconnection after the restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import make_testbed
from testbed import Testbed
from testbed.procs import BIN_DIR

from hostnet.agent.config import DEFAULT_METRICS_PORT
from tests.metricstext import value

READY_WAIT = 6.0
HOSTS = ("h1", "h2")


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    with make_testbed(hosts=len(HOSTS), controller_args=["--ready-wait", str(READY_WAIT)]
                      ) as tb:
        tb.create_network("blue", "10.61.0.0/24")
        tb.container("h1", "c1", "blue", ip="10.61.0.11")
        tb.container("h2", "c2", "blue", ip="10.61.0.12")
        yield tb


def readyz(tb: Testbed) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of /readyz; None while the controller does not answer."""
    try:
        r = httpx.get(f"{tb.api_url}/readyz", timeout=2, verify=tb.verify)
    except httpx.HTTPError:
        return None
    return r.status_code, r.json()


def controller_metrics(tb: Testbed) -> str:
    return httpx.get(f"{tb.api_url}/metrics", timeout=5, verify=tb.verify,
                     headers={"Authorization": f"Bearer {tb.token}"}).text


def agent_metrics(tb: Testbed, host: str) -> str:
    """The agent's /metrics, read from inside its host's namespace (it listens on
    that namespace's 127.0.0.1 only)."""
    url = f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics"
    res = tb.exec(host, str(BIN_DIR / "python"), "-c",
                  "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                  f"{url!r}, timeout=5).read().decode())", check=True)
    return res.stdout


def agent_value(tb: Testbed, host: str, name: str, **labels: str) -> float | None:
    return value(agent_metrics(tb, host), name, **labels)


Answer = tuple[float, int, dict[str, Any]]


def watch_readiness(tb: Testbed, timeout: float = 60.0) -> list[Answer]:
    """Every /readyz answer (seconds since the call, status, body) until the first
    ready one; each ready answer is checked against /metrics at once."""
    started = time.monotonic()
    seen: list[Answer] = []
    while time.monotonic() - started < timeout:
        answer = readyz(tb)
        if answer is not None:
            status, body = answer
            seen.append((time.monotonic() - started, status, body))
            if status == 200:
                metrics = controller_metrics(tb)
                # mastered switches only grow while nothing fails: what /readyz saw
                assert value(metrics, "daolinet_switches_mastered") == len(HOSTS), metrics
                return seen
        time.sleep(0.1)
    raise AssertionError(f"/readyz never said ready: {seen[-3:]}")


def test_readyz_waits_for_the_switches_after_a_restart(tb: Testbed) -> None:
    tb.wait_until(lambda: (readyz(tb) or (0, {}))[0] == 200, 30, "not ready before the restart")
    reconnects = agent_value(tb, "h1", "daolinet_agent_stream_reconnects_total")
    assert reconnects is not None
    tb.restart_controller(wait=False)
    seen = watch_readiness(tb)
    assert seen[0][1] == 503, seen[0]  # the switches had not come back yet
    assert any(s == 503 and b["checks"]["switches"] != "ok" for _, s, b in seen), seen
    counts = seen[-1][2]["counts"]
    assert counts == {"switches_expected": 2, "switches_connected": 2, "switches_absent": 0,
                      "switches_to_master": 2, "switches_unconfirmed": 0,
                      "agents_expected": 2, "agents_silent": 0}
    assert "h1" not in str(seen) and "h2" not in str(seen)  # counts only, never a host
    # the agent's stream came back: one reconnect more, and open
    tb.wait_until(lambda: agent_value(tb, "h1", "daolinet_agent_stream_connected") == 1, 10,
                  "h1's agent does not report its stream open")
    assert agent_value(tb, "h1", "daolinet_agent_stream_reconnects_total") == reconnects + 1
    # connections work again once ready
    assert tb.ping("c1", "c2", count=3, timeout=5)


def test_an_absent_switch_holds_readiness_back_for_the_wait_only(tb: Testbed) -> None:
    """A registered host whose switch never connects (its host is down): not ready for
    --ready-wait seconds after the start, then ready with the absent switch counted."""
    tb.api_json("POST", "/api/v1/hosts", {"name": "h9", "address": "198.18.99.9"})
    try:
        asked = time.monotonic()  # before the new process starts, and so its wait
        tb.restart_controller(wait=False)
        seen = watch_readiness(tb)
        assert time.monotonic() - asked >= READY_WAIT, seen[-2:]
        waiting = [b for _, s, b in seen if s == 503]
        assert waiting and waiting[-1]["checks"]["switches"] == (
            "1 registered switch(es) not connected yet (waiting since the start)")
        assert seen[-1][2]["counts"]["switches_absent"] == 1
        assert seen[-1][2]["counts"]["switches_connected"] == 2
    finally:
        tb.api("DELETE", "/api/v1/hosts/h9")


def test_the_agent_counts_the_routes_a_connection_installs(tb: Testbed) -> None:
    def held() -> float | None:
        return agent_value(tb, "h1", "daolinet_agent_routes")

    tb.wait_idle()
    before = held()
    assert before == len(tb.kernel_routes("h1"))  # the local route of c1
    assert tb.ping("c1", "c2", count=2, timeout=5)
    tb.wait_until(lambda: (held() or 0) > (before or 0), 10,
                  "the route to c2 does not show in h1's agent metrics")
    assert held() == len(tb.kernel_routes("h1"))  # what the kernel holds
    tb.wait_idle()  # the connection expires: its route goes, and the gauge with it
    tb.wait_until(lambda: held() == before, 10, "h1's agent still counts the expired route")
    metrics = agent_metrics(tb, "h1")
    assert value(metrics, "daolinet_agent_reconcile_errors_total", kind="delta") == 0
    assert value(metrics, "daolinet_agent_reconcile_errors_total", kind="snapshot") == 0
