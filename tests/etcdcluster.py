"""A throw-away etcd cluster on loopback for tests: N members (1 or 3) of /usr/bin/etcd.

By default it runs as a deployment does (docs/security.md, "etcd"): client and peer
TLS with client-certificate authentication, every certificate from the etcd CA
`cluster.ca` (a TestCA of its own, tests/pki.py, never a testbed's deployment CA:
etcd trusts only this one); `cluster.client_tls` are a controller's files to reach
it (`EtcdStore.from_url(cluster.url(), tls=cluster.client_tls)`), and a testbed's
replicas get theirs from `cluster.ca` (`Testbed(etcd_ca=cluster.ca)`).  `tls=False`
runs it in plain http (for controllers started without TLS files).

Every member listens on 127.0.0.1 only, on free ports chosen at start (never 2379/2380,
so a system etcd does not matter), with its data directory and log file under one
temporary directory (in /dev/shm when it exists: fsync on tmpfs is cheap).  Timings are
fast (heartbeat 100 ms, election timeout 1000 ms), which are etcd's own defaults.

    cluster = EtcdCluster(3)
    try:
        store = EtcdStore.from_url(cluster.url("daolinet-test"))
        cluster.kill(0)      # SIGKILL member 0
        cluster.start(0)     # restart it with its data directory
    finally:
        cluster.close()      # kills every member, removes the directory

Members that are still running when the interpreter exits are killed (atexit), so a
test that dies half-way leaves no etcd behind.  etcd must be installed
(scripts/bootstrap.sh does it): a missing binary is an error, not a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from controller.store.etcd.client import EtcdTLS
from tests.pki import TestCA

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
HOST = "127.0.0.1"

_live: set[EtcdCluster] = set()  # killed at exit unless closed before
_ports_lock = threading.Lock()
_ports_taken: set[int] = set()


def _free_port() -> int:
    """A free TCP port on loopback, never handed out twice by this process."""
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = int(s.getsockname()[1])
            if port not in _ports_taken and port not in (2379, 2380):
                _ports_taken.add(port)
                return port


class EtcdError(RuntimeError):
    pass


class _Member:
    def __init__(
        self, name: str, client_port: int, peer_port: int, data_dir: Path, log: Path,
        scheme: str,
    ) -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.log = log
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.peer_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """N etcd members on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        size: int = 1,
        *,
        base_dir: str | Path | None = None,
        startup_timeout: float = 20.0,
        tls: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if not os.access(ETCD, os.X_OK):
            raise EtcdError(f"{ETCD} is missing: run scripts/bootstrap.sh (installs etcd-server)")
        if base_dir is None:
            shm = Path("/dev/shm")
            parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
            self.dir = Path(tempfile.mkdtemp(prefix="daolinet-etcd-", dir=parent))
            self._own_dir = True
        else:
            self.dir = Path(base_dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._own_dir = False
        self.startup_timeout = startup_timeout
        self.token = f"daolinet-test-{os.getpid()}-{id(self):x}"
        self.members = [
            _Member(
                f"m{i}",
                _free_port(),
                _free_port(),
                self.dir / f"m{i}.data",
                self.dir / f"m{i}.log",
                "https" if tls else "http",
            )
            for i in range(size)
        ]
        self.ca: TestCA | None = None
        self.client_tls: EtcdTLS | None = None
        self._ssl: ssl.SSLContext | None = None
        if tls:
            # The etcd CA: the members' certificates and the replicas' etcd client
            # certificates only (a testbed issues its replicas' from it).
            self.ca = TestCA(self.dir / "pki", name="daolinet test etcd CA")
            for m in self.members:
                self.ca.issue(m.name, "etcd", ips=[HOST], file_stem=self._stem(m))
            client = self.ca.issue("etcd-test-client", "controller", ips=[HOST],
                                   file_stem=f"{self.token}-client")
            self.client_tls = EtcdTLS(self.ca.cert_file, client.cert_file, client.key_file)
            self._ssl = ssl.create_default_context(cafile=str(self.ca.cert_file))
            self._ssl.load_cert_chain(client.cert_file, client.key_file)
        self._lock = threading.RLock()
        self._closed = False
        _live.add(self)
        try:
            for i in range(size):
                self._spawn(i)
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    # --- what tests use ---------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """HOST:PORT of every member's client URL, member order."""
        return [m.endpoint for m in self.members]

    def url(self, prefix: str = "daolinet") -> str:
        """A store URL listing every member: etcd://H:P,H:P,.../PREFIX."""
        return "etcd://" + ",".join(self.endpoints) + "/" + prefix

    def kill(self, i: int) -> None:
        """SIGKILL member i and reap it (no-op if it is not running)."""
        self._halt(i, signal.SIGKILL, 5.0)

    def stop(self, i: int, timeout: float = 10.0) -> None:
        """SIGTERM member i and wait for it to exit (SIGKILL after `timeout`)."""
        self._halt(i, signal.SIGTERM, timeout)

    def start(self, i: int, *, wait: bool = True) -> None:
        """(Re)start member i with its data directory; by default wait until it is
        healthy (which needs a quorum of members running)."""
        with self._lock:
            if self._closed:
                raise EtcdError("cluster is closed")
            if self.members[i].running():
                return
            self._spawn(i)
        if wait:
            self.wait_healthy([i])

    def running(self, i: int) -> bool:
        return self.members[i].running()

    # --- the operator's procedures (docs/operations.md, "etcd upkeep") -----------------

    def etcdctl(self, *args: str, member: int | None = None,
                timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `etcdctl` as an operator on a member would (its CA and a client
        certificate of the etcd CA), against member `member` or every running one;
        raises EtcdError with its output when it fails."""
        which = [self.members[member]] if member is not None else [
            m for m in self.members if m.running()]
        cmd = [ETCDCTL]
        if which:  # none for what runs offline (snapshot restore)
            cmd += ["--endpoints", ",".join(m.client_url for m in which)]
        if self.client_tls is not None:
            tls = self.client_tls
            cmd += ["--cacert", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]
        done = subprocess.run([*cmd, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def lose(self, i: int) -> None:
        """Member i's host is lost for good: SIGKILL, its data directory gone."""
        self.kill(i)
        shutil.rmtree(self.members[i].data_dir, ignore_errors=True)

    def new_member(self, name: str) -> _Member:
        """A member that is not in the cluster yet (ports, certificate, directory), for
        `etcdctl member add` and then `replace`."""
        m = _Member(name, _free_port(), _free_port(), self.dir / f"{name}.data",
                    self.dir / f"{name}.log", self.members[0].scheme)
        if self.ca is not None:
            self.ca.issue(m.name, "etcd", ips=[HOST], file_stem=self._stem(m))
        return m

    def replace(self, i: int, new: _Member) -> None:
        """Start `new` in member i's place, joining the running cluster (its data
        directory empty, `--initial-cluster-state existing`), and wait until healthy."""
        with self._lock:
            if self.members[i].running():
                raise EtcdError(f"member {self.members[i].name} still runs")
            self.members[i] = new
            self._spawn(i, state="existing")
        self.wait_healthy([i])

    def stop_all(self) -> None:
        for i in range(len(self.members)):
            self.stop(i)

    def data_dir(self, i: int) -> Path:
        return self.members[i].data_dir

    def restore_args(self, i: int) -> list[str]:
        """What `etcdctl snapshot restore FILE` needs for member i, besides the file."""
        m = self.members[i]
        return [
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--initial-cluster", ",".join(f"{x.name}={x.peer_url}" for x in self.members),
            "--initial-cluster-token", self.token,
            "--initial-advertise-peer-urls", m.peer_url,
        ]

    def healthy(self, i: int, timeout: float = 1.0) -> bool:
        """True if member i answers /health with a leader (a linearizable read)."""
        m = self.members[i]
        if not m.running():
            return False
        conn = self._connection(m, timeout)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            return resp.status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_healthy(self, members: list[int] | None = None, timeout: float | None = None) -> None:
        """Wait until the given members (default: every running one) are healthy."""
        which = (
            members
            if members is not None
            else [i for i, m in enumerate(self.members) if m.running()]
        )
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        pending = list(which)
        while pending:
            for i in list(pending):
                m = self.members[i]
                if m.proc is not None and m.proc.poll() is not None:
                    raise EtcdError(
                        f"etcd member {m.name} exited with {m.proc.returncode}:\n{self.log_tail(i)}"
                    )
                if self.healthy(i):
                    pending.remove(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(self.members[i].name for i in pending)
                tails = "\n".join(self.log_tail(i) for i in pending)
                raise EtcdError(f"etcd members {names} not healthy in time:\n{tails}")
            time.sleep(0.05)

    def leader(self) -> int | None:
        """Index of the member that is the raft leader now, or None."""
        ids: dict[int, str] = {}
        leader_id = None
        for i, m in enumerate(self.members):
            if not m.running():
                continue
            conn = self._connection(m, 1.0)
            try:
                conn.request("POST", "/v3/maintenance/status", body="{}")
                status = json.loads(conn.getresponse().read())
                ids[i] = status["header"]["member_id"]
                leader_id = status.get("leader", leader_id)
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                continue
            finally:
                conn.close()
        for i, member_id in ids.items():
            if member_id == leader_id:
                return i
        return None

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            text = self.members[i].log.read_text(errors="replace")
        except OSError:
            return f"[{self.members[i].name}: no log]"
        return "\n".join(f"[{self.members[i].name}] {line}" for line in text.splitlines()[-lines:])

    def close(self) -> None:
        """Kill every member and remove the temporary directory (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for i in range(len(self.members)):
                with contextlib.suppress(Exception):
                    self.kill(i)
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdCluster({self.endpoints})"

    # --- internals --------------------------------------------------------------------

    def _connection(self, m: _Member, timeout: float) -> http.client.HTTPConnection:
        """A connection to member m's client port, with the test client's certificate
        when the cluster runs TLS."""
        if self._ssl is None:
            return http.client.HTTPConnection(HOST, m.client_port, timeout=timeout)
        return http.client.HTTPSConnection(
            HOST, m.client_port, timeout=timeout, context=self._ssl
        )

    def _stem(self, m: _Member) -> str:
        """The file stem of member m's certificate (unique in a shared CA directory)."""
        return f"{self.token}-{m.name}"

    def _tls_args(self, m: _Member) -> list[str]:
        """Client and peer TLS, each requiring a certificate from the cluster's CA."""
        if self.ca is None:
            return []
        pki = self.ca.directory
        ca, cert = self.ca.cert_file, pki / f"{self._stem(m)}.crt"
        key = pki / f"{self._stem(m)}.key"
        return [
            f"--cert-file={cert}", f"--key-file={key}", f"--trusted-ca-file={ca}",
            "--client-cert-auth",
            f"--peer-cert-file={cert}", f"--peer-key-file={key}",
            f"--peer-trusted-ca-file={ca}", "--peer-client-cert-auth",
        ]

    def _spawn(self, i: int, state: str | None = None) -> None:
        m = self.members[i]
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        if state is None:
            state = "existing" if (m.data_dir / "member").exists() else "new"
        args = [
            ETCD,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--max-txn-ops=1024",  # one change is one txn (docs/architecture.md)
            "--logger=zap",
            "--log-level=warn",
            "--log-outputs=stderr",
            *self._tls_args(m),
        ]
        with open(m.log, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            m.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a ^C of the test run does not reach it first,
                # and close() still kills it.
                start_new_session=True,
            )

    def _halt(self, i: int, sig: signal.Signals, timeout: float) -> None:
        with self._lock:
            m = self.members[i]
            proc = m.proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5.0)
            m.proc = None


class _Config(Protocol):  # what shared_cluster needs of a pytest.Config
    def add_cleanup(self, func: Callable[[], object]) -> None: ...


_shared: EtcdCluster | None = None
_shared_lock = threading.Lock()


def shared_cluster(config: _Config | None = None) -> EtcdCluster:
    """One 1-member cluster for the whole test session, started on first use; closed
    when the session ends (`config.add_cleanup`) or at exit.  Tests that share it use
    a unique_prefix() each, and must not kill it (they start their own cluster)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            _shared = EtcdCluster(1)
            if config is not None:
                config.add_cleanup(_shared.close)
        return _shared


def unique_prefix(tag: str = "test") -> str:
    """A store prefix no other test uses."""
    return f"{tag}-{uuid.uuid4().hex[:12]}"


@atexit.register
def _kill_leftovers() -> None:
    for cluster in list(_live):
        with contextlib.suppress(Exception):
            cluster.close()
