"""Traffic between hosts and containers of a testbed, with the tools a person would use:
ping, nc (TCP and UDP), traceroute, iperf3.

Imports `procs`, `hosts`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .hosts import Container, Host, Target
from .procs import Proc, Processes, TestbedError, in_netns, num, run, tail, wait_until

_PING_SUMMARY = r"(\d+) packets transmitted, (\d+) received"


class Targets:
    """What a test names (a Host, a Container, the name of either, a netns or an
    address) as a network namespace or an address."""

    def __init__(self, hosts: Mapping[str, Host], containers: Mapping[str, Container]) -> None:
        self._hosts = hosts
        self._containers = containers

    def ns_of(self, target: Target | None) -> str | None:
        if target is None:
            return None
        if isinstance(target, Host | Container):
            return target.ns
        if target in self._hosts:
            return self._hosts[target].ns
        if target in self._containers:
            return self._containers[target].ns
        return target

    def ip_of(self, target: Target) -> str:
        """The address of a Container/Host (or of one named so), else `target` itself."""
        if isinstance(target, Container):
            return target.ip
        if isinstance(target, Host):
            return target.address
        if target in self._containers:
            return self._containers[target].ip
        if target in self._hosts:
            return self._hosts[target].address
        return target


class Traffic:
    """Sends traffic from one target to another and says whether it arrived."""

    def __init__(self, targets: Targets, processes: Processes, workdir: Path) -> None:
        self._targets = targets
        self._processes = processes
        self._dir = workdir

    def _exec(self, src: Target, *cmd: str, timeout: float = 10.0,
              input: str | None = None) -> str:
        netns = self._targets.ns_of(src)
        return run(in_netns(netns, cmd), timeout=timeout, input=input).stdout

    def ping(self, src: Target, dst: Target, count: int = 1, timeout: float = 2.0,
             interval: float = 0.2, all_replies: bool = False) -> bool:
        """`ping -c count -W timeout` from `src`; True if a reply came back (every
        reply with `all_replies`)."""
        res = run(in_netns(self._targets.ns_of(src), [
            "ping", "-n", "-c", str(count), "-W", num(timeout), "-i", num(interval),
            self._targets.ip_of(dst)]), timeout=count * (interval + timeout) + 5)
        if res.returncode != 0:
            return False
        if not all_replies:
            return True
        m = re.search(_PING_SUMMARY, res.stdout)
        return bool(m and m.group(1) == m.group(2))

    def _wait_listening(self, dst: Target, port: int, udp: bool, what: str) -> None:
        flag = "-Hlun" if udp else "-Hltn"
        wait_until(
            lambda: str(port) in self._exec(dst, "ss", flag, f"sport = :{port}"),
            5.0, f"{what} did not listen on {port} in {self._targets.ns_of(dst)}",
        )

    def listen(self, dst: Target, port: int, udp: bool) -> tuple[Proc, Path]:
        """An nc listener in dst's netns (stop it with `stop`), and the file it writes
        what it receives to."""
        out = self._dir / f"nc-{secrets.token_hex(4)}.out"
        args = ["nc", "-4", "-d", "-l"] + (["-u"] if udp else []) + [str(port)]
        proc = self._processes.spawn(self._targets.ns_of(dst), *args, what="nc listener",
                                     log=out)
        try:
            self._wait_listening(dst, port, udp, "nc")
        except AssertionError:
            self._processes.stop(proc)
            raise
        return proc, out

    @contextlib.contextmanager
    def _received(self, dst: Target, port: int, udp: bool) -> Iterator[Path]:
        """A listener for the time of the block; its output file."""
        server, out = self.listen(dst, port, udp)
        try:
            yield out
        finally:
            self._processes.stop(server, timeout=2)
            out.unlink(missing_ok=True)

    @staticmethod
    def _arrived(out: Path, token: str, timeout: float) -> bool:
        with contextlib.suppress(AssertionError):
            wait_until(lambda: token in out.read_text(), timeout, "no data")
        return token in out.read_text()

    def tcp_connect(self, src: Target, dst: Target, port: int = 5001,
                    timeout: float = 5.0) -> float | None:
        """Open a TCP connection src → dst:port and send a line through it (nc listener
        in dst's netns). Return the seconds the client took, None if it failed."""
        token = secrets.token_hex(8)
        with self._received(dst, port, udp=False) as out:
            started = time.monotonic()
            client = run(in_netns(self._targets.ns_of(src), [
                "nc", "-4", "-N", "-w", num(timeout), self._targets.ip_of(dst), str(port)]),
                input=token + "\n", timeout=timeout + 5)
            elapsed = time.monotonic() - started
            if client.returncode != 0:
                return None
            return elapsed if self._arrived(out, token, timeout) else None

    def udp_ok(self, src: Target, dst: Target, port: int = 5002, timeout: float = 3.0) -> bool:
        """One UDP datagram src → dst:port arrives (nc -u listener in dst's netns)."""
        token = secrets.token_hex(8)
        with self._received(dst, port, udp=True) as out:
            self._exec(src, "nc", "-4", "-u", "-w", "1", self._targets.ip_of(dst), str(port),
                       input=token + "\n", timeout=10)
            return self._arrived(out, token, timeout)

    def traceroute(self, src: Target, dst: Target, max_hops: int = 5) -> list[str | None]:
        """Hop addresses of `traceroute -n -q1 -w1 -m5` (None for a `*`)."""
        return parse_traceroute(self._exec(src, "traceroute", "-n", "-q1", "-w1",
                                           f"-m{max_hops}", self._targets.ip_of(dst),
                                           timeout=max_hops * 2 + 10))

    def iperf3(self, src: Target, dst: Target, seconds: float = 2, port: int = 5201,
               extra: Sequence[str] = ()) -> dict[str, Any]:
        """Run an iperf3 test src → dst; return the client's JSON result."""
        server = self._processes.spawn(self._targets.ns_of(dst), "iperf3", "-s", "-1", "-p",
                                       str(port), what="iperf3 -s")
        try:
            self._wait_listening(dst, port, False, "iperf3 server")
            res = run(in_netns(self._targets.ns_of(src), [
                "iperf3", "-c", self._targets.ip_of(dst), "-p", str(port), "-J",
                "-t", num(seconds), *extra]), timeout=seconds + 30)
            try:
                return dict(json.loads(res.stdout))
            except ValueError as exc:
                raise TestbedError(f"iperf3 printed no JSON: {res.stdout}{res.stderr}") from exc
        finally:
            self._processes.stop(server, timeout=2)


class _Spawner(Protocol):  # what a Pinger needs of a testbed
    @property
    def dir(self) -> Path: ...

    def spawn(self, ns: Target | None, *cmd: str, what: str | None = None,
              log: Path | None = None, env: dict[str, str] | None = None) -> Proc: ...


class Pinger:
    """`ping -i 0.05` in the background; counts what was sent and answered."""

    def __init__(self, tb: _Spawner, src: Container, dst: Container, seconds: float) -> None:
        count = int(seconds / 0.05)
        self.out = tb.dir / f"ping-{src.name}-{dst.name}-{time.monotonic_ns()}.log"
        self.proc = tb.spawn(src, "ping", "-n", "-i", "0.05", "-W", "1", "-c", str(count),
                             dst.ip, what="ping", log=self.out)

    def result(self) -> tuple[int, int]:
        """(sent, received), once ping ended."""
        self.proc.popen.wait(timeout=120)
        m = re.search(_PING_SUMMARY, self.out.read_text())
        assert m, tail(self.out)
        return int(m.group(1)), int(m.group(2))


def ping_gap(output: str, interval: float) -> tuple[int, float]:
    """(packets lost, longest time without a reply in ms) from `ping -D` output."""
    stamps = [float(m.group(1))
              for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", output, re.M)]
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert sent and stamps, output
    lost = int(sent.group(1)) - int(sent.group(2))
    gap = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
    return lost, max(0.0, gap - interval) * 1000


def parse_traceroute(output: str) -> list[str | None]:
    hops: list[str | None] = []
    for line in output.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)", line)
        if not m:
            continue
        addr = m.group(2)
        hops.append(None if addr == "*" else addr)
    return hops
