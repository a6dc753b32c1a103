#!/usr/bin/env python3
"""What TLS costs: the hot-plug benchmark's first-packet overhead and setup rate
(benchmarks/hotplug.py) with TLS on against plaintext, in one run, interleaved.

Two namespace testbeds run side by side: one with `tls=True` (the API and the agent
streams over HTTPS/WSS and the switches over TLS, each host with its own certificate,
which the controller requires; tests/pki.py) and one with `--insecure-plaintext`.
Each round measures both, in alternating order (plain then TLS, then TLS then
plain...), on new containers: the first-packet overhead over N*N fresh
cross-host pairs, then the setup rate of M new containers on one host.  So the
machine's noise falls on both alike.  Prints the medians per mode and the median of
the rounds' differences, against the bounds of the issue (TLS: at most 10 % of the
setup rate and 0.3 ms of the median first packet).

First, and alone with --channel-only (no root needed): what TLS adds to one message
exchange on the OpenFlow channel, resolvable where the testbed figures drown in a
loaded machine's noise: a 128-byte message (a PacketIn) answered by 1 KB (FlowMods
and a PacketOut), over loopback, TLS 1.3 with the same ECDSA P-256 certificates as
a deployment against plain TCP, the two alternated exchange by exchange.

Run as root:  .venv/bin/python benchmarks/tls.py [--rounds 4] [--pairs-side 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hotplug import daolinet_rate, first_packet
from controller.openflow.listener import server_context
from tests.integration.testbed import Testbed
from tests.pki import TestCA

MODES = ("plain", "tls")
ASK, ANSWER = 128, 1024  # bytes: a PacketIn; FlowMods and a PacketOut


def _echo(conn: socket.socket) -> None:
    """Answer every ASK bytes with ANSWER bytes until the peer leaves."""
    with conn:
        while True:
            got = b""
            while len(got) < ASK:
                chunk = conn.recv(ASK - len(got))
                if not chunk:
                    return
                got += chunk
            conn.sendall(b"a" * ANSWER)


def _pair(server_ctx: ssl.SSLContext | None, client_ctx: ssl.SSLContext | None
          ) -> socket.socket:
    """A connected client socket to a one-connection echo server on loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _echo(server_ctx.wrap_socket(conn, server_side=True) if server_ctx else conn)

    threading.Thread(target=serve, daemon=True).start()
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_ctx.wrap_socket(raw) if client_ctx else raw


def _exchange(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(b"q" * ASK)
    got = 0
    while got < ANSWER:
        got += len(sock.recv(ANSWER - got))
    return time.perf_counter() - start


def channel(n: int) -> dict[str, float]:
    """Median exchange time (µs) over plain TCP and over TLS, alternated."""
    with tempfile.TemporaryDirectory() as d:
        ca = TestCA(Path(d))
        ctl, host = ca.issue("c0", "controller"), ca.issue("h1", "host")
        server = server_context(ca.cert_file, ctl.cert_file, ctl.key_file)
        client = ssl.create_default_context(cafile=str(ca.cert_file))
        client.check_hostname = False
        client.load_cert_chain(host.cert_file, host.key_file)
        socks = {"plain": _pair(None, None), "tls": _pair(server, client)}
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for i in range(n):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                times[mode].append(_exchange(socks[mode]))
        for sock in socks.values():
            sock.close()
    plain, tls = (statistics.median(times[m]) * 1e6 for m in MODES)
    return {"exchanges": n, "plain_us": round(plain, 1), "tls_us": round(tls, 1),
            "tls_extra_us": round(tls - plain, 1)}


def measure(tb: Testbed, tag: str, args: argparse.Namespace) -> dict[str, float]:
    fp = first_packet(tb, args.pairs_side, tag)
    rate = daolinet_rate(tb, args.rate_containers, tag)
    return {"overhead_median_ms": fp["overhead_median_ms"],
            "overhead_p99_ms": fp["overhead_p99_ms"],
            "steady_rtt_median_ms": fp["steady_rtt_median_ms"],
            "first_packet_lost": fp["first_packet_lost"],
            "pairs_per_s": rate["pairs_per_s"], "failed_pct": rate["failed_pct"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pairs-side", type=int, default=5, help="N: N*N cross-host pairs")
    ap.add_argument("--rate-containers", type=int, default=12)
    ap.add_argument("--idle-timeout", type=int, default=5)
    ap.add_argument("--exchanges", type=int, default=20000)
    ap.add_argument("--channel-only", action="store_true")
    args = ap.parse_args()
    ch = channel(args.exchanges)
    print(f"OpenFlow channel, {ch['exchanges']} exchanges of {ASK} B / {ANSWER} B on loopback: "
          f"plain {ch['plain_us']} µs, TLS {ch['tls_us']} µs, TLS adds {ch['tls_extra_us']} µs",
          flush=True)
    if args.channel_only:
        return 0
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with Testbed(hosts=2, idle_timeout=args.idle_timeout) as plain, \
            Testbed(hosts=2, idle_timeout=args.idle_timeout, tls=True) as tls:
        beds = {"plain": plain, "tls": tls}
        assert plain.openflow_target(0).startswith("tcp:")
        assert tls.openflow_target(0).startswith("ssl:")
        for tb in beds.values():
            tb.create_network("bench", "10.1.0.0/24")
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                result = measure(beds[mode], f"x{r}", args)
                runs[mode].append(result)
                print(f"round {r + 1} {mode}: {json.dumps(result)}", flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    def diff(key: str) -> float:
        return statistics.median(t[key] - p[key] for t, p in zip(runs["tls"], runs["plain"],
                                                                 strict=True))

    for mode in MODES:
        print(f"{mode}: first-packet overhead median {med(mode, 'overhead_median_ms'):.3f} ms "
              f"(p99 {med(mode, 'overhead_p99_ms'):.2f} ms, steady RTT "
              f"{med(mode, 'steady_rtt_median_ms'):.3f} ms), setup rate "
              f"{med(mode, 'pairs_per_s'):.0f} pairs/s")
    ratio = med("tls", "pairs_per_s") / med("plain", "pairs_per_s")
    print(f"TLS - plain, median of the rounds' differences: first packet "
          f"{diff('overhead_median_ms'):+.3f} ms (bound +0.3 ms), setup rate "
          f"{diff('pairs_per_s'):+.0f} pairs/s; ratio of the medians x{ratio:.2f} "
          f"(bound x0.90)")
    print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
