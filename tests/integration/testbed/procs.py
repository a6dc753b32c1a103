"""Processes of a testbed: commands run to completion, background processes started in
their own process group (tracked, so teardown and a later run's cleanup can stop them),
and waiting for something with the logs that explain a failure.

Imports nothing of the testbed package (every other module builds on this one).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

BIN_DIR = Path(sys.executable).parent  # daolinet-controller, daolinet-hostnet


class TestbedError(RuntimeError):
    """The testbed could not be built or a helper failed; the message says why."""

    __test__ = False  # not a pytest test class


def free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports free on `address`: every socket stays bound until all
    are, since two ports asked for one after the other may be the same one (it
    happened: a controller's API and OpenFlow listener on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((address, 0))
        return [int(s.getsockname()[1]) for s in socks]


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 10.0,
    check: bool = False,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` to completion; a timeout is rc 124 (or TestbedError with `check`)."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        if check:
            raise TestbedError(f"timed out after {timeout}s: {' '.join(cmd)}\n{out}{err}") from exc
        return subprocess.CompletedProcess(list(cmd), 124, out, err)
    if check and proc.returncode != 0:
        raise TestbedError(
            f"command failed (rc={proc.returncode}): {' '.join(cmd)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a process a test started: SIGTERM, then SIGKILL after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def in_netns(netns: str | None, cmd: Sequence[str]) -> list[str]:
    """`cmd` run inside network namespace `netns` (None: where we are)."""
    return ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)


def tail(path: Path | str, lines: int = 40) -> str:
    """The last `lines` lines of a log file (or a note that it is missing)."""
    p = Path(path)
    try:
        data = p.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"<{p} does not exist>"
    return "\n".join(data[-lines:]) if data else f"<{p} is empty>"


def mark_log(path: Path, event: str) -> None:
    """Write a line into a log that says what the testbed did to its process (a restart
    appends to the same log)."""
    with open(path, "a") as fh:
        fh.write(f"\n===== testbed: {event} at {time.time():.3f} =====\n")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet". On timeout raise
    AssertionError with `message`, the last value or exception and `detail()`.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # the predicate may fail until things are up
            last = exc
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                try:
                    extra = "\n" + detail()
                except Exception as exc:
                    extra = f"\n<detail failed: {exc!r}>"
            raise AssertionError(f"{message} (after {timeout:.1f}s; last: {last!r}){extra}")
        time.sleep(interval)


def num(value: float) -> str:
    """A number as a command-line argument (no `.0` for whole numbers)."""
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- pids


def proc_starttime(pid: int) -> int | None:
    """When `pid` started (ticks since boot), which tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces/parens: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat (starttime)


def alive(pid: int, starttime: int | None) -> bool:
    now = proc_starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def kill_group(pid: int, starttime: int | None, timeout: float = 5.0) -> None:
    """SIGTERM the process group led by `pid` (if it is still that process), then SIGKILL."""
    if not alive(pid, starttime):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid, starttime):
                return
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def exit_on_sigterm() -> None:
    """Turn a plain SIGTERM into SystemExit so teardown and atexit still run."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


# --------------------------------------------------------------------------- tracked processes


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    what: str
    log: Path | None
    start: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class ProcRecord(Protocol):
    """Where started processes are written down before anything else can go wrong
    (the registry of the testbed)."""

    def add_proc(self, proc: Proc) -> None: ...

    def remove_proc(self, proc: Proc) -> None: ...


# Teardown order: traffic tools, agents, controllers, ovs-vswitchd, the rest (ovsdb-server).
_STOP_ORDER: tuple[Callable[[str], bool], ...] = (
    lambda what: what.startswith(("nc", "iperf")),
    lambda what: what.startswith("agent"),
    lambda what: what == "daolinet-controller",
    lambda what: what.startswith("ovs-vswitchd"),
)


class Processes:
    """Starts, stops and runs the processes of one testbed; every background process is
    recorded in `record` while it lives."""

    def __init__(self, workdir: Path, record: ProcRecord) -> None:
        self._dir = workdir
        self._record = record
        self.live: list[Proc] = []
        self.every: list[Proc] = []  # every process ever started (for resources())

    def spawn(
        self,
        netns: str | None,
        *cmd: str,
        what: str | None = None,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start `cmd` (inside `netns` unless None) in its own process group; stdout and
        stderr go to `log` (default: a file in the testbed dir)."""
        if log is None:
            log = self._dir / f"proc-{len(self.live)}-{Path(cmd[0]).name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            popen = subprocess.Popen(
                in_netns(netns, cmd), stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        finally:
            fh.close()
        proc = Proc(popen=popen, what=what or " ".join(cmd), log=log,
                    start=proc_starttime(popen.pid))
        self.live.append(proc)
        self.every.append(proc)
        self._record.add_proc(proc)
        return proc

    def stop(self, proc: Proc, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the whole process group of `proc`; SIGKILL after `timeout`."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        # children left in the group (the leader is gone, the group may live on)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.live:
            self.live.remove(proc)
            self._record.remove_proc(proc)

    def stop_all(self) -> list[str]:
        """Stop every live process, users of the network first; the problems met."""
        errors: list[str] = []

        def rank(proc: Proc) -> int:
            return next((i for i, first in enumerate(_STOP_ORDER) if first(proc.what)),
                        len(_STOP_ORDER))

        for proc in sorted(self.live, key=rank):
            try:
                self.stop(proc, timeout=5)
            except Exception as exc:
                errors.append(f"stop {proc.what}: {exc}")
        return errors

    def wait_proc(
        self,
        proc: Proc,
        predicate: Callable[[], bool],
        message: str,
        log: Path,
        timeout: float,
        more_logs: Iterable[Path] = (),
    ) -> None:
        """wait_until(predicate), failing at once (with the logs) if `proc` exits."""
        logs = [log, *more_logs]
        if proc.log and proc.log != log:
            logs.append(proc.log)

        def diagnosis() -> str:
            return "".join(f"\n--- {p} ---\n{tail(p, 40 if p == log else 15)}" for p in logs)

        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if not proc.alive():
                raise TestbedError(
                    f"{proc.what} exited with rc={proc.popen.returncode} while waiting: "
                    f"{message}{diagnosis()}"
                )
            try:
                if predicate():
                    return
            except TestbedError:
                raise  # a helper that failed for good (as before the split)
            except Exception as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TestbedError(
                    f"{message} after {timeout:.1f}s (last: {last!r}){diagnosis()}"
                )
            time.sleep(0.1)


# --------------------------------------------------------------------------- requirements

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVS_TOOLS = ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
NET_TOOLS = ("ip", "ethtool", "ping", "nc", "ss", "traceroute", "tcpdump", "iperf3")
DAOLINET_BINARIES = ("daolinet-controller", "daolinet-hostnet")
DAOLINET_MODULES = ("controller.main", "hostnet.main")


WIREGUARD_TOOLS = (Path("/usr/bin/wireguard-go"), Path("/usr/bin/wg"))


def missing_requirements(*, daolinet: bool = True, wireguard: bool = False) -> list[str]:
    """What this machine lacks to run a testbed (`wireguard`: one with sites); empty
    when everything is there."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append(f"root (running as euid {os.geteuid()}; needs euid 0)")
    missing += [f"`{tool}` not on PATH" for tool in (*OVS_TOOLS, *NET_TOOLS)
                if shutil.which(tool) is None]
    if not OVS_SCHEMA.exists():
        missing.append(f"OVS schema {OVS_SCHEMA}")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun (OVS netdev bridges need TUN)")
    if daolinet:
        missing += [f"{BIN_DIR / b}" for b in DAOLINET_BINARIES if not (BIN_DIR / b).exists()]
        for module in DAOLINET_MODULES:
            try:
                spec = importlib.util.find_spec(module)
            except ImportError:
                spec = None
            if spec is None:
                missing.append(f"module `{module}` (entry point not written yet)")
    if wireguard and not all(tool.exists() for tool in WIREGUARD_TOOLS):
        missing.append("wireguard-go and wg (apt-get install wireguard-tools wireguard-go)")
    return missing


def skip_reason(*, daolinet: bool = True, wireguard: bool = False) -> str | None:
    missing = missing_requirements(daolinet=daolinet, wireguard=wireguard)
    return "integration testbed needs: " + "; ".join(missing) if missing else None
