"""The controller processes of a testbed: one ``daolinet-controller`` or several
replicas on one etcd store, started, killed and started again with the same store,
token and ports; which replica masters which switch; the API client.

The controller runs in the root namespace and listens on 198.18.X.1; with WireGuard it
runs in the namespace of the first host and listens on every address (hosts of other
sites reach it at that host's tunnel address), and the test's etcd cluster, on this
namespace's loopback, is bridged into that namespace at the same address.

Imports `procs`, `layout`, `hosts`, `tcpproxy`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.metricstext import label_values, value
from tests.pki import TestCA

from .hosts import BRIDGE, Host, base_flows_installed, controller_connected, controller_roles
from .layout import Layout
from .procs import BIN_DIR, Proc, Processes, TestbedError, mark_log, num, wait_until
from .tcpproxy import TcpProxy


class Controllers:
    """The replicas (index 0 is "the controller") and the API client."""

    def __init__(
        self,
        layout: Layout,
        processes: Processes,
        hosts: Mapping[str, Host],
        workdir: Path,
        *,
        store_urls: Sequence[str | None],
        idle_timeout: float,
        ready_timeout: float,
        controller_args: Sequence[str] = (),
        replica_site: str | None = None,
        replica_remote_ip: str | None = None,
        tls: bool = False,
        ca: TestCA | None = None,
        etcd_ca: TestCA | None = None,
    ) -> None:
        # `store_urls`: one per replica (None: a SQLite file of the testbed)
        # `replica_site`, `replica_remote_ip`: every replica runs with --site SITE
        # --advertise-openflow-remote tcp:IP:ITS_PORT (the target of other sites'
        # switches; nothing needs to listen there)
        # `tls`: a test CA (tests/pki.py; `ca`, else one in the testbed's directory)
        # issues the replicas' certificate and each host's; the replicas run with
        # --tls-* and the switches connect over TLS (ssl: targets) with their host's
        # certificate.  `etcd_ca`: the etcd cluster's own CA (EtcdCluster.ca), which
        # issues each replica's etcd client certificate (--etcd-tls-*)
        self._layout = layout
        self._processes = processes
        self._hosts = hosts
        self._dir = workdir
        self.store_urls = list(store_urls)
        self.replicas = len(self.store_urls)
        self._idle_timeout = idle_timeout
        self._ready_timeout = ready_timeout
        self._args = list(controller_args)
        self._site = replica_site
        self._remote_ip = replica_remote_ip
        self.token = ""
        self.token_file = workdir / "token"
        self.procs: list[Proc | None] = []
        self.api_ports: list[int] = []
        self.of_ports: list[int] = []
        self._store_bridges: list[TcpProxy] = []
        self._http: httpx.Client | None = None
        self._verify: ssl.SSLContext | None = None
        self.ca: TestCA | None = (ca or TestCA(workdir / "pki")) if tls else None
        self.etcd_ca = etcd_ca

    # ------------------------------------------------------------------ names

    @property
    def ns(self) -> str | None:
        """The namespace the replicas run in (None: the root namespace)."""
        first = self._hosts[self._layout.host_names[0]]
        return first.ns if self._layout.wireguard else None

    @property
    def api_url(self) -> str:
        return self.replica_url(0)

    @property
    def log(self) -> Path:
        return self.replica_log(0)

    @property
    def scheme(self) -> str:
        """The API's scheme: https with TLS (the controller then serves nothing else)."""
        return "https" if self.ca else "http"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client of the API verifies it with: the testbed's CA under TLS."""
        if self.ca is None:
            return True
        if self._verify is None:
            self._verify = ssl.create_default_context(cafile=str(self.ca.cert_file))
        return self._verify

    def replica_url(self, i: int) -> str:
        return f"{self.scheme}://{self._layout.controller_ip}:{self.api_ports[i]}"

    def replica_log(self, i: int) -> Path:
        return self._dir / ("controller.log" if i == 0 else f"controller-{i}.log")

    def openflow_target(self, i: int, *, remote: bool = False) -> str:
        """Replica `i`'s OpenFlow target, for the switches of its site or (`remote`) of
        the other sites."""
        ip = self._remote_ip if remote and self._remote_ip else self._layout.controller_ip
        return f"{'ssl' if self.ca else 'tcp'}:{ip}:{self.of_ports[i]}"

    def tls_args(self, name: str, role: str, ips: Sequence[str]) -> list[str]:
        """--tls-ca/--tls-cert/--tls-key of a certificate issued now for `name` in
        `role` (none without TLS)."""
        if self.ca is None:
            return []
        issued = self.ca.issue(name, role, ips=ips,
                               file_stem=f"{self._layout.id}-{role}-{name}")
        return ["--tls-ca", str(self.ca.cert_file), "--tls-cert", str(issued.cert_file),
                "--tls-key", str(issued.key_file)]

    def etcd_tls_args(self, i: int) -> list[str]:
        """--etcd-tls-* of replica `i`: an etcd client certificate issued now by the
        etcd CA (none without one, or without an etcd store)."""
        if self.etcd_ca is None or not (self.store_urls[i] or "").startswith("etcd:"):
            return []
        issued = self.etcd_ca.issue(f"c{i}", "controller", ips=["127.0.0.1"],
                                    file_stem=f"{self._layout.id}-etcd-client-c{i}")
        return ["--etcd-tls-ca", str(self.etcd_ca.cert_file),
                "--etcd-tls-cert", str(issued.cert_file), "--etcd-tls-key",
                str(issued.key_file)]

    def agent_urls(self, host: Host) -> str:
        """The `--controller` of an agent: every replica, through WireGuard from the
        hosts of other sites."""
        first = self._hosts[self._layout.host_names[0]]
        if self._layout.wireguard and host.site != first.site:
            return ",".join(f"{self.scheme}://{first.tunnel}:{p}" for p in self.api_ports)
        return ",".join(self.replica_url(i) for i in range(self.replicas))

    def free_port(self) -> int:
        """A TCP port free on the controller's address."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # (with sites the controller has a fresh namespace: any port free here is)
            lay = self._layout
            s.bind((lay.root_ip if lay.wireguard else lay.controller_ip, 0))
            return int(s.getsockname()[1])

    # ------------------------------------------------------------------ processes

    def start(self, *, wait: bool = True) -> None:
        """Start every replica (the hosts are built).  Without `wait` (one replica
        only): return once its process is spawned, and `wait_started` waits for it,
        so that the agents can start while it does (see Testbed.start)."""
        assert wait or self.replicas == 1, "several replicas start one after the other"
        if self._layout.wireguard and self.replicas > 1:
            # Replicas of the first host's site; switches of other sites reach them
            # through WireGuard, at the first host's tunnel address.
            first = self._hosts[self._layout.host_names[0]]
            self._site = self._site or first.site
            self._remote_ip = self._remote_ip or first.tunnel
        self._bridge_store()
        self.token = secrets.token_urlsafe(24)
        self.procs = [None] * self.replicas
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        taken: set[int] = set()
        for _ in range(self.replicas):
            for ports in (self.api_ports, self.of_ports):
                port = self.free_port()
                while port in taken:
                    port = self.free_port()
                taken.add(port)
                ports.append(port)
        self._http = httpx.Client(
            base_url=self.api_url,
            verify=self.verify,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )
        if not wait:
            self.procs[0] = self._spawn(0)
            return
        for i in range(self.replicas):
            self.launch(i)

    def wait_started(self) -> None:
        """Wait for the replica that `start(wait=False)` spawned to serve."""
        proc = self.procs[0]
        assert proc is not None, "start(wait=False) first"
        self._wait_serving(0, proc)

    def _bridge_store(self) -> None:
        """Bridge each 127.0.0.1 endpoint of the etcd store URLs into the replicas'
        namespace at the same address, so the store URLs stay as given."""
        if self.ns is None:
            return
        ports = sorted({int(m) for u in self.store_urls if (u or "").startswith("etcd:")
                        for m in re.findall(r"127\.0\.0\.1:(\d+)", u or "")})
        for port in ports:
            self._store_bridges.append(TcpProxy(("127.0.0.1", port), netns=self.ns))

    def _cmd(self, i: int) -> list[str]:
        listen = self._layout.listen_ip
        cmd = [
            str(BIN_DIR / "daolinet-controller"),
            "--store", self.store_urls[i] or f"sqlite:///{self._dir / 'store.db'}",
            "--token-file", str(self.token_file),
            "--api", f"{listen}:{self.api_ports[i]}",
            "--openflow", f"{listen}:{self.of_ports[i]}",
            "--idle-timeout", num(self._idle_timeout),
        ]
        if self.store_urls[i]:
            cmd += [
                "--replica", f"c{i}",
                "--advertise", self.replica_url(i),
                "--advertise-openflow", self.openflow_target(i),
            ]
        if self._site is not None:
            cmd += ["--site", self._site]
        if self._remote_ip is not None:
            cmd += ["--advertise-openflow-remote", self.openflow_target(i, remote=True)]
        # its API's addresses: the agents of other sites reach it through WireGuard
        ips = [self._layout.controller_ip, "127.0.0.1"]
        first = self._hosts[self._layout.host_names[0]]
        if self._layout.wireguard and first.tunnel:
            ips.append(first.tunnel)
        cmd += self.tls_args(f"c{i}", "controller", ips) or ["--insecure-plaintext"]
        cmd += self.etcd_tls_args(i)
        return [*cmd, *self._args]

    def launch(self, i: int) -> Proc:
        """Start replica `i`; return once it serves its API and its OpenFlow port."""
        proc = self.procs[i] = self._spawn(i)
        self._wait_serving(i, proc)
        return proc

    def _spawn(self, i: int) -> Proc:
        return self._processes.spawn(
            self.ns, *self._cmd(i), what="daolinet-controller",
            log=self.replica_log(i), env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    def _wait_serving(self, i: int, proc: Proc) -> None:
        """Until replica `i` (`proc`) serves its API and its OpenFlow port."""

        def ready() -> bool:
            r = httpx.get(f"{self.replica_url(i)}/healthz", timeout=2.0, verify=self.verify)
            if r.status_code != 200:
                return False
            with socket.create_connection((self._layout.controller_ip, self.of_ports[i]),
                                          timeout=2.0):
                return True

        self._processes.wait_proc(
            proc, ready,
            f"controller {i} did not serve {self.replica_url(i)}/healthz and OpenFlow port "
            f"{self.of_ports[i]}",
            self.replica_log(i), timeout=self._ready_timeout,
        )

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Stop controller replica `i` (SIGKILL: a crash)."""
        proc = self.procs[i]
        if proc is not None:
            self._processes.stop(proc, sig=sig)
        self.procs[i] = None

    def start_replica(self, i: int) -> None:
        """Start controller replica `i` again (same store, token, ports)."""
        mark_log(self.replica_log(i), f"replica {i} start")
        self.launch(i)

    def restart(self, *, sig: int = signal.SIGTERM, wait: bool = True) -> None:
        """Stop the controller (replica 0) and start it again; with `wait`, return once
        every bridge is connected to it again and has its base flows."""
        proc = self.procs[0]
        if proc is not None:
            self._processes.stop(proc, sig=sig)
        mark_log(self.log, "controller restart")
        proc = self.launch(0)
        if not wait:
            return
        for host in self._hosts.values():
            self._processes.wait_proc(
                proc, functools.partial(controller_connected, host),
                f"{BRIDGE} of {host.name} did not reconnect to the restarted controller",
                self.log, timeout=self._ready_timeout, more_logs=[host.vswitchd_log],
            )
        for host in self._hosts.values():
            self._processes.wait_proc(
                proc, functools.partial(base_flows_installed, host),
                f"base flows missing on {host.name} after controller restart",
                self.log, timeout=self._ready_timeout,
            )

    def close(self) -> None:
        for bridge in self._store_bridges:
            bridge.close()
        if self._http is not None:
            self._http.close()

    # ------------------------------------------------------------------ masters

    def _metrics(self, i: int) -> str | None:
        """Replica `i`'s /metrics (None when it does not answer)."""
        try:
            # /metrics needs a credential under TLS (docs/security.md)
            return httpx.get(f"{self.replica_url(i)}/metrics", timeout=1.0,
                             verify=self.verify,
                             headers={"Authorization": f"Bearer {self.token}"}).text
        except httpx.HTTPError:
            return None

    def replica_gauge(self, i: int, name: str) -> int:
        """A gauge of replica `i`'s /metrics (0 when it does not answer)."""
        return int(value(self._metrics(i) or "", name) or 0)

    def master_of(self, host: Host) -> list[int]:
        """The replicas (indexes) that are OpenFlow master of the host's bridge, as
        OVS's database says (it writes roles only every few seconds)."""
        roles = controller_roles(host)
        return [i for i in range(len(self.of_ports))
                if roles.get(self.openflow_target(i)) == "master"]

    def confirmed_masters(self, without: int | None = None) -> dict[str, int] | None:
        """host -> the one replica whose role reply made it master of the host's
        switch, as the replicas' /metrics say (prompt); None unless every host has
        exactly one, and it is not `without`."""
        live = [i for i in range(self.replicas) if i != without and self.procs[i] is not None]
        try:
            hosts = httpx.get(f"{self.replica_url(live[0])}/api/v1/hosts", timeout=2.0,
                              headers={"Authorization": f"Bearer {self.token}"},
                              verify=self.verify).json()
        except (httpx.HTTPError, IndexError, ValueError):
            return None
        dpids = {h["dpid"]: h["name"] for h in hosts if h["name"] in self._hosts}
        found: dict[str, list[int]] = {}
        for i in live:
            text = self._metrics(i) or ""
            for dpid in label_values(text, "daolinet_switch_mastered", "dpid"):
                if int(dpid) in dpids:
                    found.setdefault(dpids[int(dpid)], []).append(i)
        if sorted(found) != sorted(self._hosts) or any(len(v) != 1 for v in found.values()):
            return None
        return {h: v[0] for h, v in found.items()}

    def wait_masters(self, timeout: float = 10.0, *, without: int | None = None,
                     interval: float = 0.05) -> dict[str, int]:
        """Wait until every switch has exactly one confirmed master (not `without`)."""
        holder: list[dict[str, int]] = []

        def found() -> bool:
            m = self.confirmed_masters(without)
            if m is not None:
                holder.append(m)
            return m is not None

        wait_until(found, timeout, "not every switch has exactly one confirmed master",
                   interval=interval, detail=self.roles_dump)
        return holder[-1]

    def kill_master(self, host: str, timeout: float = 10.0
                    ) -> tuple[int, dict[str, int], dict[str, int], float]:
        """SIGKILL the replica that masters `host`'s switch; wait until every switch
        has a confirmed master again.  (victim, masters before, masters after, seconds
        from the kill to then)."""
        before = self.wait_masters()
        victim = before[host]
        killed = time.monotonic()
        self.kill_replica(victim, signal.SIGKILL)
        after = self.wait_masters(timeout, without=victim, interval=0.01)
        return victim, before, after, time.monotonic() - killed

    def roles_dump(self) -> str:
        return "\n".join(f"{h}: {controller_roles(host)}" for h, host in self._hosts.items())

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        """Call the controller API with the bearer token; `path` is relative to /api/v1
        unless it starts with /api/ or is /healthz."""
        if self._http is None:
            raise TestbedError("this testbed has no controller (daolinet=False)")
        if not (path.startswith("/api/") or path.startswith("/healthz")):
            path = "/api/v1" + (path if path.startswith("/") else "/" + path)
        try:
            return self._http.request(method, path, json=json, **kwargs)
        except httpx.ConnectError:
            # replica 0 is down: any other replica serves the whole API
            for i in range(1, self.replicas):
                if self.procs[i] is None:
                    continue
                with contextlib.suppress(httpx.ConnectError):
                    return self._http.request(method, self.replica_url(i) + path, json=json,
                                              **kwargs)
            raise

    def api_json(self, method: str, path: str, json: Any = None) -> Any:
        r = self.api(method, path, json=json)
        if r.status_code >= 400:
            raise TestbedError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def registered(self, host: Host) -> bool:
        r = self.api("GET", "/hosts")
        return r.status_code == 200 and any(
            item.get("name") == host.name for item in items(r.json())
        )


def items(data: Any) -> list[dict[str, Any]]:
    """A list answer, or the list inside a wrapper object ({"items": [...]} etc.)."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list):
                return value
    return []
