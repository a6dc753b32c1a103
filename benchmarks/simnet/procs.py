"""The processes a scale run measures: the controller (daolinet-controller, from this
tree) and the baseline os-ken app; their RSS and CPU from /proc; the API calls.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.pki import TestCA

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")
IDLE_ENV = "DAOLINET_SCALE_IDLE_TIMEOUT"  # the baseline app's flows' idle timeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


async def cpu_percent(cpu_seconds: Callable[[], float], seconds: float) -> float:
    """Share of one core used over the next `seconds`."""
    c0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds() - c0) / (time.monotonic() - t0)


class Proc:
    """A child process and its resource use (/proc/PID)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = env or {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=out, cwd=ROOT, env=env)
        self.started = time.monotonic()

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        self.popen = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def cpu_percent(self, seconds: float) -> float:
        return await cpu_percent(self.cpu_seconds, seconds)


class Controller(Proc):
    """daolinet-controller on loopback: alone with a SQLite store in `workdir`, or
    replica `name` of several on an etcd store (`store_url`)."""

    def __init__(self, workdir: Path, name: str, token: str, idle_timeout: int,
                 store_url: str | None = None, ca: TestCA | None = None,
                 profile: Path | None = None, etcd_ca: TestCA | None = None) -> None:
        """`ca`: OpenFlow over TLS with a certificate of this CA; `etcd_ca`: etcd over
        https with an etcd client certificate of the etcd cluster's own CA;
        `profile`: run it under benchmarks/simnet/sampler.py, reporting there."""
        self.workdir = workdir
        self.api_port, self.of_port = free_port(), free_port()
        self.token = token
        token_file = workdir / "token"
        if not token_file.exists():
            token_file.write_text(self.token + "\n")
            token_file.chmod(0o600)
        self.store = workdir / "store.db"
        # HTTPS with the deployment's CA (the API verifies hosts' and replicas'
        # certificates; this client, an operator, uses the admin token)
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.api_port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca.cert_file)) if ca else True)
        launch = (["-m", "benchmarks.simnet.sampler", str(profile), "--"] if profile
                  else ["-c", "from controller.main import run; run()"])
        tls: list[str] = []
        if ca is not None:
            own = ca.issue(name, "controller", ips=["127.0.0.1"])
            tls = ["--tls-ca", str(ca.cert_file), "--tls-cert", str(own.cert_file),
                   "--tls-key", str(own.key_file)]
        if etcd_ca is not None and store_url is not None:
            client = etcd_ca.issue(name, "controller", ips=["127.0.0.1"],
                                   file_stem=f"{name}-etcd-client")
            tls += ["--etcd-tls-ca", str(etcd_ca.cert_file), "--etcd-tls-cert",
                    str(client.cert_file), "--etcd-tls-key", str(client.key_file)]
        replica = [] if store_url is None else [
            "--replica", name, "--advertise", self.url,
            "--advertise-openflow", f"{'ssl' if ca else 'tcp'}:127.0.0.1:{self.of_port}",
        ]
        argv = [
            sys.executable, *launch,
            "--store", store_url or f"sqlite:///{self.store}", "--token-file", str(token_file),
            "--api", f"127.0.0.1:{self.api_port}", "--openflow", f"127.0.0.1:{self.of_port}",
            "--idle-timeout", str(idle_timeout), "--log-level", "warning", *replica,
            *(tls or ["--insecure-plaintext"]),
        ]
        super().__init__(argv, workdir / f"{name}.log")
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from the start until the API answers and OpenFlow listens."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=5,
                          verify=self.verify) as client:
            while time.monotonic() < deadline:
                assert self.popen is not None
                if self.popen.poll() is not None:
                    raise RuntimeError(f"controller exited: see {self.log}")
                try:
                    if client.get("/api/v1/networks").status_code == 200:
                        wait_port(self.of_port, max(1.0, deadline - time.monotonic()))
                        return time.monotonic() - self.started
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"controller not ready after {timeout} s: see {self.log}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, self.url + "/api/v1" + path, json=body,
                          headers=self.headers, timeout=120, verify=self.verify)
        r.raise_for_status()
        return r.json()

    def metrics(self) -> dict[str, float]:
        """The /metrics values by name; a labelled series is summed over its labels."""
        text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=60,
                         verify=self.verify).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    async def post_all(self, path: str, bodies: list[dict[str, Any]], parallel: int) -> None:
        """POST every body, `parallel` requests at a time; the first refusal raises."""
        queue = iter(bodies)
        async with httpx.AsyncClient(base_url=self.url + "/api/v1", headers=self.headers,
                                     timeout=120, verify=self.verify) as client:
            async def worker() -> None:
                for body in queue:
                    r = await client.post(path, json=body)
                    if r.status_code >= 300:
                        raise RuntimeError(f"POST {path} {body}: {r.status_code} {r.text}")
            await asyncio.gather(*(worker() for _ in range(parallel)))


class Controllers:
    """The controller, or its replicas: started, stopped and measured together."""

    def __init__(self, workdir: Path, replicas: int, idle_timeout: int,
                 store_url: str | None, etcd_dir: Path | None, ca: TestCA | None = None,
                 profile: Path | None = None, etcd_ca: TestCA | None = None) -> None:
        token = secrets.token_urlsafe(24)
        self.all = [Controller(workdir, f"c{i}", token, idle_timeout, store_url, ca,
                               profile if i == 0 else None, etcd_ca)
                    for i in range(replicas)]
        self.first = self.all[0]
        self.etcd_dir = etcd_dir

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", c.of_port) for c in self.all]

    def start(self) -> None:
        for c in self.all:
            c.start()

    def stop(self) -> None:
        for c in self.all:
            c.stop()

    def wait_ready(self) -> float:
        """Seconds from the first start until every replica serves."""
        ready = [c.wait_ready() + c.started for c in self.all]
        return max(ready) - min(c.started for c in self.all)

    def cpu_seconds(self) -> float:
        return sum(c.cpu_seconds() for c in self.all)

    def rss_mb(self) -> float:
        return sum(c.rss_mb() for c in self.all)

    async def cpu_percent(self, seconds: float) -> float:
        return await cpu_percent(self.cpu_seconds, seconds)

    def metrics(self) -> dict[str, float]:
        """The counters of every replica, summed."""
        out: dict[str, float] = {}
        for c in self.all:
            for k, v in c.metrics().items():
                out[k] = out.get(k, 0.0) + v
        return out

    def store_mb(self) -> float:
        """The SQLite file (and its journal), or the first etcd member's database
        (not its write-ahead log, which etcd preallocates in 64 MB files)."""
        if self.etcd_dir is not None:
            files = sorted(self.etcd_dir.glob("*.data/member/snap/db"))[:1]
        else:
            files = list(self.first.workdir.glob("store.db*"))
        return sum(f.stat().st_size for f in files) / 1e6


class Baseline(Proc):
    """The minimal os-ken app (baseline_app.py) on its own OpenFlow port."""

    def __init__(self, workdir: Path, idle_timeout: int, ca: TestCA | None = None) -> None:
        """`ca`: os-ken's TLS listener (a client certificate of this CA required)."""
        self.of_port = free_port()
        listen = ["--ofp-listen-host", "127.0.0.1"]
        if ca is None:
            listen += ["--ofp-tcp-listen-port", str(self.of_port)]
        else:
            own = ca.issue("baseline", "controller", ips=["127.0.0.1"])
            listen += ["--ofp-ssl-listen-port", str(self.of_port), "--ctl-privkey",
                       str(own.key_file), "--ctl-cert", str(own.cert_file), "--ca-certs",
                       str(ca.cert_file)]
        launcher = (
            "from os_ken.base.app_manager import AppManager\n"
            "from os_ken import cfg\n"
            "from os_ken.controller import controller\n"
            f"cfg.CONF(args={listen!r}, project='os_ken')\n"
            "AppManager.run_apps(['benchmarks.simnet.baseline_app'])\n"
        )
        super().__init__([sys.executable, "-c", launcher], workdir / "baseline.log",
                         {IDLE_ENV: str(idle_timeout)})

    def wait_ready(self, timeout: float = 60) -> float:
        wait_port(self.of_port, timeout)
        return time.monotonic() - self.started
