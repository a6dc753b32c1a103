"""What a testbed creates, written down before it is created, and the cleanup of what
crashed testbeds left behind.

Every testbed has an id of 4 hex digits; everything it names starts with ``dlt<id>``.
Its registry file (``/run/dlt-testbed/<id>.json``) lists its netns, root links and
processes with its owner's pid, so :func:`cleanup_leftovers` removes what a crashed run
left without touching a testbed that another live process is using.  The underlay
subnets (198.18.X.0/24) are handed out here too, under the same lock.

Imports `procs` only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .procs import Proc, TestbedError, alive, in_netns, kill_group, proc_starttime, run

PREFIX = "dlt"
ID_LEN = 4
REGISTRY = Path("/run/dlt-testbed")
WG_UAPI_DIR = Path("/var/run/wireguard")


# --------------------------------------------------------------------------- what exists


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns]).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def link_names(netns: str | None = None) -> list[str]:
    """The interfaces of `netns` (None: the root namespace), `ip -o link show`."""
    out = run(in_netns(netns, ["ip", "-o", "link", "show"])).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def root_links() -> list[str]:
    return link_names()


def owner_id(name: str) -> str | None:
    """The testbed id in a name ``dlt<id>...``, None for a name no testbed made."""
    if not name.startswith(PREFIX) or len(name) < len(PREFIX) + ID_LEN:
        return None
    ident = name[len(PREFIX) : len(PREFIX) + ID_LEN]
    return ident if re.fullmatch(r"[0-9a-f]+", ident) else None


def kill_netns(ns: str) -> None:
    """Kill every process inside `ns`, then delete it."""
    for _ in range(3):
        pids = [p for p in netns_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            kill_group(pid, proc_starttime(pid), timeout=3.0)
    run(["ip", "netns", "delete", ns])


def _remove_netns(names: Iterable[str]) -> list[str]:
    """Kill and delete those of `names` that exist; what was removed."""
    existing = set(netns_list())
    gone = [ns for ns in names if ns in existing]
    for ns in gone:
        kill_netns(ns)
    return gone


def _remove_links(names: Iterable[str]) -> list[str]:
    """Delete those of the root links `names` that exist; what was removed."""
    existing = set(root_links())
    gone = [link for link in names if link in existing]
    for link in gone:
        run(["ip", "link", "delete", link])
    return gone


def remove_wg_sockets(ids: set[str] | None, keep: Iterable[str] = ()) -> list[str]:
    """Remove wireguard-go control sockets of testbeds (`ids`, or every dead one):
    a killed wireguard-go leaves its socket behind, and the next one of the name
    would refuse to start."""
    removed = []
    for sock in WG_UAPI_DIR.glob(f"{PREFIX}*.sock"):
        ident = owner_id(sock.stem)
        if ident is None or ident in set(keep) or (ids is not None and ident not in ids):
            continue
        if Path(f"/sys/class/net/{sock.stem}").exists():
            continue  # the interface lives in the root namespace: not ours
        sock.unlink(missing_ok=True)
        removed.append(f"socket {sock}")
    return removed


# --------------------------------------------------------------------------- registry files


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _entries() -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """Every registry file with its content (None: unreadable)."""
    for reg in REGISTRY.glob("*.json"):
        try:
            yield reg, json.loads(reg.read_text())
        except (OSError, ValueError):
            yield reg, None


def _live_ids() -> set[str]:
    return {data["id"] for _, data in _entries()
            if data is not None and alive(data.get("owner", -1), data.get("owner_start"))}


def cleanup_leftovers() -> list[str]:
    """Remove what crashed earlier testbeds left: netns ``dlt*``, links ``dlt*``,
    their processes and temp dirs. Testbeds whose owning process is alive are kept.
    Returns what was removed (for logging)."""
    removed: list[str] = []
    with registry_lock():
        live = _live_ids()
        # registry entries of dead owners: their processes and directories
        for reg, data in _entries():
            if data is not None and data.get("id") in live:
                continue
            for proc in (data or {}).get("procs", []):
                if alive(proc["pid"], proc.get("start")):
                    kill_group(proc["pid"], proc.get("start"))
                    removed.append(f"process {proc['pid']} ({proc.get('what', '?')})")
            if data is not None:
                removed += [f"netns {ns}" for ns in _remove_netns(data.get("netns", []))]
                removed += [f"link {link}" for link in _remove_links(data.get("links", []))]
                workdir = data.get("dir")
                if workdir and Path(workdir).exists() and not data.get("keep"):
                    shutil.rmtree(workdir, ignore_errors=True)
                    removed.append(f"dir {workdir}")
            reg.unlink(missing_ok=True)

        # anything named dlt* without a live owner (registry lost, older runs)
        def orphan(name: str) -> bool:
            ident = owner_id(name)
            return ident is not None and ident not in live

        removed += [f"netns {ns}" for ns in _remove_netns(filter(orphan, netns_list()))]
        removed += [f"link {link}" for link in _remove_links(filter(orphan, root_links()))]
        removed += remove_wg_sockets(None, keep=live)
    return removed


# --------------------------------------------------------------------------- allocation


def _used_underlay_octets() -> set[int]:
    """X of every 198.18.X.0/24 an address or route of this machine uses."""
    text = run(["ip", "-4", "-o", "addr", "show"]).stdout
    text += run(["ip", "-4", "route", "show", "table", "all"]).stdout
    return {int(m.group(1)) for m in re.finditer(r"198\.18\.(\d+)\.", text)}


def _allocate(subnets: int) -> tuple[str, list[int]]:
    """A fresh testbed id and `subnets` free 198.18.X.0/24 octets (call under
    :func:`registry_lock`, and register the id before letting go of it)."""
    live = _live_ids()
    existing = {owner_id(n) for n in [*netns_list(), *root_links()]}
    while True:
        ident = secrets.token_hex(ID_LEN // 2 + 1)[:ID_LEN]
        if ident not in live and ident not in existing:
            break
    free = [o for o in range(1, 255) if o not in _used_underlay_octets()]
    if len(free) < subnets:
        raise TestbedError("no free 198.18.X.0/24 underlay subnet")
    return ident, random.sample(free, subnets)


class Registry:
    """The registry file of one testbed: its netns, root links and live processes,
    saved before each of them is created."""

    def __init__(self, ident: str, workdir: Path, keep_dir: bool) -> None:
        self.id = ident
        self.dir = workdir
        self.keep_dir = keep_dir
        self.netns: list[str] = []
        self.links: list[str] = []
        self._procs: list[Proc] = []

    @classmethod
    def create(cls, subnets: int, keep_dir: bool) -> tuple[Registry, list[int]]:
        """The registry of a new testbed (saved: its id is taken) with its work directory,
        and `subnets` free 198.18.X.0/24 octets."""
        with registry_lock():
            ident, octets = _allocate(subnets)
            registry = cls(ident, Path(tempfile.mkdtemp(prefix=f"{PREFIX}{ident}-")), keep_dir)
            registry.save()
        return registry, octets

    @property
    def file(self) -> Path:
        return REGISTRY / f"{self.id}.json"

    def save(self) -> None:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        data = {
            "id": self.id,
            "owner": os.getpid(),
            "owner_start": proc_starttime(os.getpid()),
            "dir": str(self.dir),
            "keep": self.keep_dir,
            "netns": self.netns,
            "links": self.links,
            "procs": [
                {"pid": p.pid, "start": p.start, "what": p.what}
                for p in self._procs if p.alive()
            ],
        }
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.file)

    def add_proc(self, proc: Proc) -> None:
        self._procs.append(proc)
        self.save()

    def remove_proc(self, proc: Proc) -> None:
        self._procs.remove(proc)
        self.save()

    def add_link(self, name: str) -> None:
        """Record a root-namespace link about to be created."""
        self.links.append(name)
        self.save()

    def add_netns(self, ns: str) -> None:
        """Record a network namespace about to be created (or attached)."""
        if ns not in self.netns:
            self.netns.append(ns)
            self.save()

    def resources(self, procs: Iterable[Proc]) -> dict[str, list[Any]]:
        """What of this testbed still exists (netns, root links, live `procs`)."""
        prefix = f"{PREFIX}{self.id}"
        return {
            "netns": [n for n in netns_list() if n.startswith(prefix)],
            "links": [n for n in root_links() if n.startswith(prefix)],
            "processes": [p.pid for p in procs if alive(p.pid, p.start)],
        }

    def remove(self) -> list[str]:
        """Delete the netns and links (newest first), the wireguard-go sockets, the
        directory (unless kept) and the registry file; the problems met."""
        errors: list[str] = []
        for ns in reversed(self.netns):
            try:
                _remove_netns([ns])
            except Exception as exc:
                errors.append(f"netns {ns}: {exc}")
        _remove_links(reversed(self.links))
        remove_wg_sockets({self.id})
        if self.dir.exists() and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.file.unlink(missing_ok=True)
        return errors
