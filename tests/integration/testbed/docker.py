"""A real dockerd per testbed host, for the Docker plugin tests.

Each dockerd runs inside its host's network namespace (so the veth the plugin
creates there is the one Docker moves into the container) with its own data root,
exec root, API socket and pidfile, all under the host's testbed directory.

`ip netns exec` gives the process a mount namespace of its own; the start script
uses it to bind the host's plugin directory over `/run/docker/plugins` (which is
where Docker discovers plugins, machine-wide otherwise) and to mount the cgroup
hierarchies again under the fresh /sys that `ip netns exec` mounts.  Nothing of
that is visible outside.  The image is built from busybox-static with
`docker import` (no registry).

Imports `procs`, `hosts`, `testbed` (a Dockerd belongs to a host of a Testbed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controller.desired.models import NAMES_RESPONDER

from .hosts import Container, Host
from .procs import Proc, TestbedError, mark_log, run, tail
from .testbed import Testbed

IMAGE = "dltest-busybox"
BUSYBOX = Path("/bin/busybox")


def docker_cli() -> str | None:
    """The Docker client that matches Debian's dockerd (API 1.41)."""
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker")


def missing_docker() -> list[str]:
    missing = []
    if shutil.which("dockerd") is None:
        missing.append("`dockerd` not on PATH (apt-get install docker.io)")
    if docker_cli() is None:
        missing.append("`docker` client not on PATH")
    if not BUSYBOX.exists() or "static" not in run(["file", "-L", str(BUSYBOX)]).stdout:
        missing.append(f"static {BUSYBOX} (apt-get install busybox-static)")
    if shutil.which("nsenter") is None:
        missing.append("`nsenter`")
    return missing


_SCRIPT = """\
set -e
mount -t tmpfs -o mode=755 dlt_cgroup /sys/fs/cgroup
while read -r src path type opts rest; do
  mkdir -p "$path"
  if [ "$type" = cgroup2 ]; then mount -t cgroup2 none "$path"
  else mount -t cgroup -o "$(echo "$opts" | sed 's/^rw,//; s/relatime,\\?//')" cgroup "$path"; fi
done < {cgroups}
mkdir -p /run/docker/plugins
mount --bind {plugins} /run/docker/plugins
{prelude}
exec dockerd --data-root {data} --exec-root {exec_root} -H unix://{sock} \\
  --pidfile {pidfile} {firewall} --shutdown-timeout 2 --storage-driver overlay2 \\
  --dns {dns}
"""
# Docker's firewall off (the lab's setting), or as Docker is installed: iptables and
# IP forwarding on (FORWARD policy DROP), its docker0 bridge and masquerade.
NO_FIREWALL = "--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none"
AS_INSTALLED = "--iptables=true --ip6tables=false --ip-forward=true --ip-masq=true"
# Docker 28 sets the DROP policy only when it turns IP forwarding on itself, as at a
# boot where dockerd starts before anything else enabled it: so it starts off here.
AS_AT_BOOT = "echo 0 > /proc/sys/net/ipv4/ip_forward"


class Dockerd:
    """One dockerd in one testbed host."""

    def __init__(self, tb: Testbed, host: Host | str, *, firewall: bool = False) -> None:
        """`firewall`: run with Docker's iptables rules as installed (FORWARD DROP)."""
        self.tb = tb
        self.firewall = firewall
        self.host = tb.host(host)
        self.dir = self.host.dir / "docker"
        self.sock = self.host.docker_sock
        self.log = self.host.dir / "dockerd.log"
        self.proc: Proc | None = None
        self.containers: set[str] = set()  # ids ever created (for teardown)

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_started(timeout)

    def spawn(self) -> None:
        """Start dockerd; `wait_started` waits until it answers (the engines of a lab
        start side by side)."""
        self.dir.mkdir(exist_ok=True)
        self.host.plugin_socket.parent.mkdir(exist_ok=True)
        cgroups = self.dir / "cgroups"
        with open("/proc/self/mounts") as fh:
            lines = [ln for ln in fh if ln.split()[2:3] in (["cgroup"], ["cgroup2"])]
        cgroups.write_text("".join(lines))
        script = self.dir / "start.sh"
        script.write_text(_SCRIPT.format(
            cgroups=cgroups, plugins=self.host.plugin_socket.parent, data=self.dir / "data",
            exec_root=self.dir / "exec", sock=self.sock, pidfile=self.dir / "dockerd.pid",
            firewall=AS_INSTALLED if self.firewall else NO_FIREWALL,
            prelude=AS_AT_BOOT if self.firewall else "",
            dns=NAMES_RESPONDER,  # as the hostnet role's daemon.json: the name responder
        ))
        mark_log(self.log, "dockerd start")
        self.proc = self.tb.spawn(self.host, "sh", str(script), what=f"dockerd {self.host.name}",
                                  log=self.log)

    def wait_started(self, timeout: float = 30.0) -> None:
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while self.cli("version", timeout=5).returncode != 0:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise TestbedError(
                    f"dockerd of {self.host.name} did not start:\n{tail(self.log, 20)}"
                )
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.tb.stop(self.proc, sig=sig, timeout=20)
            self.proc = None

    def crash(self) -> None:
        """A power loss: dockerd, its containerd and every container process die at once
        (SIGKILL) and the exec root goes, as /run does at a boot; the container records
        and Docker's network store (the data root) stay."""
        self.stop(signal.SIGKILL)
        # containerd and the shims outlive dockerd (another session): by their paths
        for pid in _pids_of_containers({*self.containers, f"{self.dir}/"}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Its pidfiles would name processes that may linger as zombies here (PID 1 of
        # this machine need not reap them): dockerd would wait for a dead containerd.
        shutil.rmtree(self.dir / "exec", ignore_errors=True)
        (self.dir / "dockerd.pid").unlink(missing_ok=True)

    def _docker(self) -> list[str]:
        """The client command for this dockerd."""
        cli = docker_cli()
        assert cli is not None
        return [cli, "-H", f"unix://{self.sock}"]

    def cli(self, *args: str, timeout: float = 60.0, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        return run([*self._docker(), *args], timeout=timeout, input=input, check=check,
                   env=env)

    def ok(self, *args: str, timeout: float = 60.0) -> str:
        res = self.cli(*args, timeout=timeout)
        if res.returncode != 0:
            raise TestbedError(
                f"docker {' '.join(args)} on {self.host.name} failed: {res.stderr.strip()}\n"
                f"--- {self.host.agent_log} ---\n{tail(self.host.agent_log, 15)}"
            )
        return res.stdout.strip()

    def import_image(self) -> None:
        root = self.dir / "image"
        shutil.rmtree(root, ignore_errors=True)
        (root / "bin").mkdir(parents=True)
        (root / "etc").mkdir()
        (root / "tmp").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = run([str(BUSYBOX), "--list"], check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        res = subprocess.run(
            [*self._docker(), "import", "-c", 'CMD ["/bin/sh"]', "-", IMAGE],
            stdin=tar.stdout, capture_output=True, text=True, timeout=60, check=False,
        )
        tar.wait()
        if res.returncode != 0:
            raise TestbedError(f"docker import failed: {res.stderr}")

    def run(self, name: str, network: str, *opts: str, cmd: tuple[str, ...] = ("sleep", "3600"),
            ) -> str:
        cid = self.ok("run", "-d", "--name", name, "--network", network, *opts, IMAGE, *cmd)
        self.containers.add(cid)
        return cid

    def inspect(self, what: str) -> dict[str, Any]:
        data = json.loads(self.ok("inspect", what))
        return dict(data[0])

    def pid(self, name: str) -> int:
        return int(self.ok("inspect", "-f", "{{.State.Pid}}", name))

    def attach_netns(self, name: str, network: str = "web") -> Container:
        """Name the container's network namespace (`ip netns attach`) and return it as a
        testbed Container, so the testbed helpers (ping, tcp_ok, ...) work on it."""
        ns = f"{self.host.ns}d{name}"[:40]
        run(["ip", "netns", "delete", ns])  # attached before (the container restarted)
        self.tb.adopt_netns(ns)
        run(["ip", "netns", "attach", ns, str(self.pid(name))], check=True)
        net = self.inspect(name)["NetworkSettings"]["Networks"][network]
        c = Container(name=f"docker-{self.host.name}-{name}", ns=ns, ip=net["IPAddress"],
                      mac=net["MacAddress"], host=self.host.name, network=network,
                      endpoint={}, ifnames=["eth0"])
        return c

    def close(self) -> None:
        """Remove every container, stop dockerd, kill what a crash may have left."""
        if self.proc is not None and self.proc.alive():
            ids = self.cli("ps", "-aq", "--no-trunc", timeout=20).stdout.split()
            self.containers.update(ids)
            if ids:
                self.cli("rm", "-f", *ids, timeout=60)
        self.stop()
        for cid in self.containers:
            for pid in _pids_of_container(cid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _pids_of_container(cid: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if cid in (entry / "cgroup").read_text():
                pids.append(int(entry.name))
    return pids


def _pids_of_containers(marks: set[str]) -> list[int]:
    """Processes with one of `marks` (container ids, paths) in their cgroup or command
    line: the containers, their shims, containerd."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            text = (entry / "cgroup").read_text() + (entry / "cmdline").read_bytes().decode(
                errors="replace")
            if any(mark in text for mark in marks):
                pids.append(int(entry.name))
    return pids


def close_engines(engines: list[Dockerd]) -> None:
    """Close each dockerd (containers removed, process stopped); a failure is printed
    and the others are still closed."""
    for d in engines:
        try:
            d.close()
        except Exception as exc:  # teardown goes on
            print(f"dockerd teardown: {exc}", file=sys.stderr)
