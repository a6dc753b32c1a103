"""Sites joined by WireGuard (issue 4), on the namespace testbed with real wireguard-go.

One module-scoped testbed, five hosts in four sites (idle timeout 3 s)::

    site a (controller's)   h1 (controller + agent), h2      198.18.A.0/24
    site b                  h3 (relay)                      198.18.B.0/24
    site c, behind NAT      h4                              198.18.C.0/24  -- NAT router
    site d, behind NAT      h5                              198.18.D.0/24  -- NAT router

Site segments are joined by a router namespace that drops every ICMP packet; the NAT
routers masquerade and nothing routes to their inside.  Tunnel addresses are
198.19.A.(10+N).
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import BIN_DIR, Container, Proc, Testbed, skip_reason

REASON = skip_reason(wireguard=True)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]

SITES = {"h1": "a", "h2": "a", "h3": "b", "h4": "c", "h5": "d"}
WG_PORT = 51820


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    bed = Testbed(
        list(SITES), sites=SITES, wireguard=True, nat_sites=("c", "d"), relays=("h3",),
        idle_timeout=3, container_tx_off=True,
    )
    with bed:
        bed.create_network("net", "10.61.0.0/24")
        yield bed


@pytest.fixture(scope="module")
def c(tb: Testbed) -> dict[str, Container]:
    """One container per host: c1 on h1 ... c5 on h5."""
    return {f"c{i}": tb.container(f"h{i}", f"c{i}", "net") for i in range(1, 6)}


def _tunnels(tb: Testbed) -> set[str]:
    return {f"{h.tunnel}/32" for h in tb.hosts.values()}


def _per_connection_allowed_ips(tb: Testbed, host: str) -> list[str]:
    """Allowed-ips of a host's peers that are not tunnel addresses (connections)."""
    tunnels = _tunnels(tb)
    return [a for p in tb.wg_dump(host) for a in p["allowed_ips"] if a not in tunnels]


def _capture(tb: Testbed, path: Path, site: str) -> Proc:
    """tcpdump on the router's link towards `site` (an underlay link between sites)."""
    ns, leg = tb.router_leg(site)
    log = path.with_suffix(".log")
    proc = tb.spawn(ns, "tcpdump", "-i", leg, "-n", "-U", "-s", "0", "-w", str(path),
                    what=f"tcpdump {leg}", log=log)
    tb.wait_until(lambda: "listening" in log.read_text(), 10, "tcpdump did not start")
    return proc


def _read(path: Path, expr: str) -> list[str]:
    res = subprocess.run(["tcpdump", "-r", str(path), "-n", expr], capture_output=True,
                         text=True, timeout=30, check=False)
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


def _iperf(tb: Testbed, src: Container, dst: Container, seconds: float, port: int) -> tuple[
        Proc, Proc, Path]:
    out = tb.dir / f"iperf-{src.name}-{dst.name}-{port}.json"
    server = tb.spawn(dst, "iperf3", "-s", "-1", "-p", str(port), what="iperf3 -s")
    tb.wait_until(lambda: str(port) in tb.exec(dst, "ss", "-Hltn").stdout, 5,
                  "iperf3 server did not listen")
    client = tb.spawn(src, "iperf3", "-c", dst.ip, "-p", str(port), "-t", str(seconds),
                      "-i", "0.5", "-J", what="iperf3 -c", log=out)
    return server, client, out


def _iperf_result(tb: Testbed, procs: tuple[Proc, Proc, Path], timeout: float) -> dict[str, Any]:
    server, client, out = procs
    try:
        client.popen.wait(timeout=timeout)
    finally:
        tb.stop(client, timeout=2)
        tb.stop(server, timeout=2)
    text = out.read_text()
    return dict(json.loads(text[text.index("{"):]))


def _stalled_intervals(result: dict[str, Any]) -> int:
    return sum(1 for iv in result["intervals"] if iv["sum"]["bytes"] == 0)


# --------------------------------------------------------------------------- mesh + keys


def test_mesh_and_registration(tb: Testbed) -> None:
    hosts = {h["name"]: h for h in tb.api_json("GET", "/hosts")}
    for name, h in tb.hosts.items():
        reg = hosts[name]
        assert reg["site"] == SITES[name]
        assert reg["tunnel_address"] == h.tunnel
        assert reg["wg_public_key"] == h.wg_public_key
        nat = SITES[name] in ("c", "d")
        assert reg["wg_endpoint"] == (None if nat else f"{h.address}:{WG_PORT}")
        # the private key was made on the host, mode 0600, and is nowhere else
        key = h.dir / "wg.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().strip() not in json.dumps(hosts)
    # peers are the hosts of other sites; NATed pairs go through the relay h3
    peers = {h: {p["public_key"] for p in tb.wg_dump(h)} for h in tb.hosts}
    key = {n: h.wg_public_key for n, h in tb.hosts.items()}
    assert peers["h1"] == {key["h3"], key["h4"], key["h5"]}
    assert peers["h3"] == {key["h1"], key["h2"], key["h4"], key["h5"]}
    assert peers["h4"] == {key["h1"], key["h2"], key["h3"]}
    relay = next(p for p in tb.wg_dump("h4") if p["public_key"] == key["h3"])
    assert f"{tb.hosts['h5'].tunnel}/32" in relay["allowed_ips"]
    # a NATed host keeps its mappings open; others learnt its endpoint from it
    assert {p["keepalive"] for p in tb.wg_dump("h4")} == {"25"}
    on_h1 = next(p for p in tb.wg_dump("h1") if p["public_key"] == key["h4"])
    assert on_h1["endpoint"].startswith(tb.nat_address("c") + ":")


def test_cross_site_traffic_only_inside_wireguard(tb: Testbed, c: dict[str, Container]) -> None:
    """Capture on the router between the sites while containers, agents (HTTP API,
    agent stream) and switches (OpenFlow) talk across sites: only WireGuard UDP."""
    pcaps = [tb.dir / f"router-{site}.pcap" for site in tb.site_names]
    dumps = [_capture(tb, p, site) for p, site in zip(pcaps, tb.site_names, strict=True)]
    try:
        tb.restart_agent("h3")  # registration + stream + OpenFlow from site b, in the capture
        assert tb.ping(c["c2"], c["c3"], count=3, all_replies=True)
        assert tb.tcp_ok(c["c2"], c["c3"], port=5301)
        assert tb.tcp_ok(c["c4"], c["c1"], port=5302)
        assert tb.udp_ok(c["c3"], c["c1"], port=5303)
    finally:
        time.sleep(0.5)
        for dump in dumps:
            tb.stop(dump, sig=2)
    for pcap in pcaps:
        assert len(_read(pcap, f"udp port {WG_PORT}")) > 5, pcap.name
        assert _read(pcap, f"not arp and not (udp port {WG_PORT})") == [], pcap.name
    raw = b"".join(p.read_bytes() for p in pcaps)
    for ct in c.values():
        assert ipaddress.IPv4Address(ct.ip).packed not in raw, f"{ct} address in clear"
    for text in (b"HTTP/1.1", b"/api/v1", b"Upgrade: websocket"):
        assert text not in raw
    # inside a site: no encryption (h2 -> h1 goes over the underlay, plain)
    assert tb.ping(c["c2"], c["c1"])
    routes = {(r["src"], r["dst"]): r["path"] for r in tb.routes()}
    assert routes[("c1", "c2")] == "underlay"
    assert routes[("c2", "c3")] == "wireguard"


def test_full_size_tcp_with_icmp_blocked(tb: Testbed, c: dict[str, Container]) -> None:
    """Containers keep MTU 1500; a bulk TCP transfer across sites works with every
    ICMP packet dropped on the underlay (the hosts clamp the MSS to the tunnel)."""
    assert not tb.ping(tb.hosts["h2"], tb.hosts["h3"].address, timeout=1)  # ICMP is blocked
    assert "mtu 1500" in tb.exec(c["c2"], "ip", "link", "show", c["c2"].ifnames[0]).stdout
    for src, dst in ((c["c2"], c["c3"]), (c["c3"], c["c2"]), (c["c4"], c["c1"])):
        result = tb.iperf3(src, dst, seconds=1.5, port=5201)
        assert "error" not in result, result.get("error")
        assert result["end"]["sum_received"]["bytes"] > 1_000_000, (src, dst)


def test_nat_host_reaches_and_is_reached(tb: Testbed, c: dict[str, Container]) -> None:
    assert tb.ping(c["c4"], c["c2"], count=2, all_replies=True)
    assert tb.tcp_ok(c["c1"], c["c4"], port=5311)  # reached from another site
    assert tb.tcp_ok(c["c4"], c["c3"], port=5312)


def test_nat_to_nat_through_relay(tb: Testbed, c: dict[str, Container]) -> None:
    assert tb.ping(c["c4"], c["c5"], count=3, all_replies=True)
    assert tb.tcp_ok(c["c5"], c["c4"], port=5321)
    routes = {(r["src"], r["dst"]): r for r in tb.routes()}
    assert routes[("c4", "c5")]["path"] == "relay:h3"
    # the relay holds routes + allowed-ips for both ends while the connection lives
    relay_routes = {r.dst: r.via for r in tb.via_routes("h3")}
    assert relay_routes.get(c["c4"].ip) == tb.hosts["h4"].tunnel
    assert relay_routes.get(c["c5"].ip) == tb.hosts["h5"].tunnel
    allowed = _per_connection_allowed_ips(tb, "h3")
    assert {f"{c['c4'].ip}/32", f"{c['c5'].ip}/32"} <= set(allowed)


def test_idle_hosts_hold_no_per_connection_state(tb: Testbed, c: dict[str, Container]) -> None:
    assert tb.ping(c["c2"], c["c3"])
    assert tb.ping(c["c4"], c["c5"])
    tb.wait_idle()
    for h in tb.hosts:
        assert _per_connection_allowed_ips(tb, h) == [], h


def test_rotate_key_keeps_live_connections(tb: Testbed, c: dict[str, Container]) -> None:
    old = tb.hosts["h3"].wg_public_key
    run = _iperf(tb, c["c2"], c["c3"], seconds=6, port=5211)
    time.sleep(2)
    env = dict(os.environ, DAOLINET_URL=tb.api_url, DAOLINET_TOKEN=tb.token)
    res = subprocess.run([str(BIN_DIR / "daolictl"), "host", "rotate-key", "h3", "--json"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    new = json.loads(res.stdout)["wg_public_key"]
    result = _iperf_result(tb, run, timeout=30)
    assert "error" not in result, result.get("error")  # no reset
    assert new != old
    assert _stalled_intervals(result) <= 4  # at most a short pause (0.5 s intervals)
    assert result["intervals"][-1]["sum"]["bytes"] > 0
    # every peer of h3 switched; the key file changed, still 0600
    for h in ("h1", "h2", "h4", "h5"):
        keys = {p["public_key"] for p in tb.wg_dump(h)}
        assert new in keys and old not in keys, h
    key = tb.hosts["h3"].dir / "wg.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The relay works with its new key too: the NATed ends handshake with it anew,
    # which can take a retry of their first packet.
    tb.wait_until(lambda: tb.ping(c["c5"], c["c4"]), 15,
                  "NATed hosts do not reach each other through the re-keyed relay")


def test_site_link_down_and_up(tb: Testbed, c: dict[str, Container]) -> None:
    ns, leg = tb.router_leg("b")
    # Long enough for TCP's retransmission backoff (a few seconds after 4 s down)
    # and a new WireGuard handshake to bring the stream back.
    run = _iperf(tb, c["c2"], c["c3"], seconds=20, port=5221)
    time.sleep(2)
    tb.exec(ns, "ip", "link", "set", leg, "down", check=True)
    try:
        time.sleep(4)
        assert not tb.ping(c["c1"], c["c3"], timeout=1)
    finally:
        tb.exec(ns, "ip", "link", "set", leg, "up", check=True)
    result = _iperf_result(tb, run, timeout=50)
    assert "error" not in result, result.get("error")
    after_up = [iv["sum"]["bytes"] for iv in result["intervals"] if iv["sum"]["start"] >= 7]
    assert sum(after_up) > 0, f"the stream did not resume after the link came back: {after_up}"
    # new connections across the link work again, without operator action
    tb.wait_until(lambda: tb.ping(c["c1"], c["c3"], timeout=1), 20,
                  "no cross-site connectivity after the link came back")
    assert tb.tcp_ok(c["c3"], c["c2"], port=5331)


def test_host_added_later_becomes_a_peer(tb: Testbed, c: dict[str, Container]) -> None:
    h6 = tb.add_host("h6", "b")
    # h2 (site a) was not touched by provisioning: it learnt h6 from the controller
    tb.wait_until(
        lambda: h6.wg_public_key in {p["public_key"] for p in tb.wg_dump("h2")}, 10,
        "h2 did not learn the new host h6")
    c6 = tb.container("h6", "c6", "net")
    assert tb.ping(c["c2"], c6, count=2, all_replies=True)
    assert tb.ping(c["c4"], c6)  # and the NATed host too
    assert tb.ping(c6, c["c3"])  # same site: plain underlay
