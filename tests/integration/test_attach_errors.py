"""Attach with bad input, through the real agent and controller: a clear one-line
error, a non-zero exit, and nothing half-made left behind (no OVS port, no veth in
the host or the container namespace, no endpoint record)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import make_testbed
from testbed import BIN_DIR, Testbed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    with make_testbed(hosts=1, idle_timeout=3) as tb:
        tb.create_network("web", "10.7.0.0/24")
        tb.container("h1", "holder", "web", ip="10.7.0.5")
        yield tb


def attach(tb: Testbed, ns: str, *args: str):
    h = tb.hosts["h1"]
    return tb.exec(h, str(BIN_DIR / "daolinet-hostnet"), "attach", "--socket", str(h.socket),
                   "--netns", ns, *args, timeout=30)


def state(tb: Testbed, ns: str | None) -> tuple[list[str], list[str], list[str], list[str]]:
    h = tb.hosts["h1"]
    ports = tb.vsctl(h, "list-ports", "br-dl").stdout.split()
    host_links = tb.exec(h, "ip", "-o", "link", "show").stdout.splitlines()
    inside = tb.exec(ns, "ip", "-o", "link", "show").stdout.splitlines() if ns else []
    names = sorted(c["name"] for c in tb.api_json("GET", "/containers"))
    return sorted(ports), sorted(line.split(":")[1] for line in host_links), inside, names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--network", "nosuch"), "network nosuch"),
        (("--network", "web", "--ip", "10.9.0.3"), "10.9.0.3"),
        (("--network", "web", "--ip", "10.7.0.5"), "10.7.0.5"),
        (("--network", "web", "--mac", "zz:zz"), "mac"),
    ],
    ids=["unknown-network", "ip-outside-subnet", "ip-taken", "bad-mac"],
)
def test_bad_attach_is_a_clear_error_and_leaves_nothing(tb: Testbed, args, message) -> None:
    ns = f"dlt{tb.id}cbad"
    tb.exec(None, "ip", "netns", "add", ns, check=True)
    try:
        before = state(tb, ns)
        res = attach(tb, ns, "--name", "bad", *args)
        assert res.returncode == 1, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert message.lower() in lines[0].lower(), lines[0]
        assert state(tb, ns) == before
    finally:
        tb.exec(None, "ip", "netns", "del", ns)


def test_missing_namespace_is_refused_before_anything_is_made(tb: Testbed) -> None:
    before = state(tb, None)
    res = attach(tb, f"dlt{tb.id}cnone", "--network", "web")
    assert res.returncode == 1
    assert "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert state(tb, None) == before
