"""The prechecks' pure logic (tests/unit/deploy/test_prechecks_filters.py).

* `daolinet_listeners`: the listening sockets of a host from `ss -Htunlp` followed
  by the cgroup of every process that holds one (roles/prechecks/tasks/ports.yml).
* `daolinet_port_conflicts`: which of the ports daolinet needs another program holds
  (a port held by daolinet's own unit is not a conflict: a second run passes).
* `daolinet_wheel_targets`, `daolinet_build_target`: which Pythons and platforms a
  wheelhouse's binary wheels, or a build Python's, run on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

CGROUPS_MARK = "#cgroups"
WILDCARDS = frozenset({"0.0.0.0", "::", "*"})
PROCESS = re.compile(r'\("([^"]*)",pid=(\d+)')
# name-version(-build)?-python-abi-platform.whl
WHEEL = re.compile(r"^(?P<dist>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                   r"-(?P<plat>[^-]+)\.whl$")
MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "x86_64": "x86_64", "aarch64": "aarch64"}


def _split_address(local: str) -> tuple[str, int]:
    """'0.0.0.0:8080', '[::]:53', '*:51820', '127.0.0.53%lo:53' -> (address, port)."""
    address, _, port = local.rpartition(":")
    address = address.strip("[]").split("%", 1)[0]
    return address, int(port)


def _unit_of(cgroup_path: str) -> str | None:
    """The innermost systemd service of a cgroup path (a container's nests them)."""
    units = [part for part in cgroup_path.split("/") if part.endswith(".service")]
    return units[-1] if units else None


def daolinet_listeners(text: str) -> list[dict[str, Any]]:
    """Sockets from `ss -Htunlp`, then '#cgroups', then 'PID CGROUP-LINE' lines."""
    sockets_part, _, cgroups_part = text.partition(CGROUPS_MARK)
    units: dict[str, str] = {}
    for line in cgroups_part.splitlines():
        pid, _, cgroup = line.strip().partition(" ")
        unit = _unit_of(cgroup.rpartition(":")[2]) if cgroup else None
        if unit is not None:
            units[pid] = unit
    listeners: list[dict[str, Any]] = []
    for line in sockets_part.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] not in ("tcp", "udp"):
            continue
        address, port = _split_address(fields[4])
        owners = PROCESS.findall(" ".join(fields[6:]))
        listeners.append({
            "proto": fields[0],
            "address": address,
            "port": port,
            "processes": sorted({name for name, _ in owners}),
            "units": sorted({units[pid] for _, pid in owners if pid in units}),
        })
    return listeners


def _overlap(held: str, wanted: str) -> bool:
    return held in WILDCARDS or wanted in WILDCARDS or held == wanted


def _owned_by(listener: Mapping[str, Any], owners: Iterable[str]) -> bool:
    allowed = set(owners)
    if not listener["processes"]:
        # A socket no process holds is the kernel's (kernel WireGuard's UDP port).
        return "kernel" in allowed
    return bool(listener["units"]) and set(listener["units"]) <= allowed


def daolinet_port_conflicts(listeners: Iterable[Mapping[str, Any]],
                            wanted: Iterable[Mapping[str, Any]]) -> list[str]:
    """One message per port daolinet needs that something else holds.

    wanted: {proto, address, port, what, variable, owners}: owners are the systemd
    units (and "kernel") that may hold it, daolinet's own.
    """
    listeners = list(listeners)
    messages: list[str] = []
    for need in wanted:
        for held in listeners:
            if (held["proto"] != need["proto"] or held["port"] != int(need["port"])
                    or not _overlap(held["address"], need["address"])
                    or _owned_by(held, need["owners"])):
                continue
            holder = ", ".join(held["processes"]) or "the kernel"
            if held["units"]:
                holder += f" ({', '.join(held['units'])})"
            messages.append(
                f"{need['proto']} port {need['port']} ({need['what']}) is held on "
                f"{held['address']} by {holder}: stop that, or give daolinet another "
                f"port ({need['variable']})")
            break
    return messages


def _platform(tag: str) -> str | None:
    """'manylinux_2_17_x86_64' -> 'linux-x86_64'; 'any' -> None (runs anywhere)."""
    if tag == "any":
        return None
    for prefix, system in (("manylinux", "linux"), ("musllinux", "linux"),
                           ("linux", "linux"), ("macosx", "macos"), ("win", "windows")):
        if tag.startswith(prefix):
            machine = tag.rsplit("_", 1)[-1] if "_" in tag else tag
            if tag.endswith("x86_64"):
                machine = "x86_64"
            return f"{system}-{MACHINES.get(machine, machine)}"
    return tag


def daolinet_wheel_targets(names: Iterable[str]) -> dict[str, list[str]]:
    """The CPython tags (cp311) and platforms (linux-x86_64) binary wheels need.

    Pure-Python and abi3 wheels need no particular CPython; 'any' wheels no platform.
    """
    pythons: set[str] = set()
    platforms: set[str] = set()
    for name in names:
        match = WHEEL.match(PurePosixPath(name.strip()).name)
        if match is None:
            continue
        if match["abi"] not in ("none", "abi3"):
            pythons.add(match["abi"])
        found = {_platform(tag) for tag in match["plat"].split(".")}
        platforms.update(p for p in found if p is not None)
    return {"pythons": sorted(pythons), "platforms": sorted(platforms)}


def daolinet_build_target(text: str) -> dict[str, list[str]]:
    """'cp311 linux-x86_64' (a build Python's tag and sysconfig platform) -> targets."""
    python, _, platform = text.strip().partition(" ")
    system, _, rest = platform.partition("-")
    machine = rest.rsplit("-", 1)[-1]
    system = {"macosx": "macos", "win": "windows"}.get(system, system)
    return {"pythons": [python], "platforms": [f"{system}-{MACHINES.get(machine, machine)}"]}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "daolinet_listeners": daolinet_listeners,
            "daolinet_port_conflicts": daolinet_port_conflicts,
            "daolinet_wheel_targets": daolinet_wheel_targets,
            "daolinet_build_target": daolinet_build_target,
        }
