"""Open vSwitch configuration through `ovs-vsctl` (the only module that runs it).

Every call goes to one OVSDB socket (`--db=unix:SOCK`), has a timeout, and turns
any failure into an `OvsError` whose message is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

ENDPOINT_KEY = "daolinet-endpoint"
CONTAINER_KEY = "daolinet-container"


class OvsError(RuntimeError):
    """An ovs-vsctl call failed; the message is one line."""


def detect_datapath_type() -> str:
    """`system` where the Open vSwitch kernel module is loaded, else `netdev`."""
    return "system" if os.path.exists("/sys/module/openvswitch") else "netdev"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_ovs_value(value: object) -> object:
    """Decode one OVSDB JSON cell (atoms, ["set", [...]], ["map", [...]])."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag == "map" and isinstance(body, list):
            return {str(k): _parse_ovs_value(v) for k, v in body}
        if tag == "set" and isinstance(body, list):
            return [_parse_ovs_value(v) for v in body]
        if tag in ("uuid", "named-uuid"):
            return body
    return value


# OVS backs off up to 8 s between attempts to reach a controller that refused it: a
# replica that restarts would then wait that long for its switches, and be useless as
# the next leader meanwhile.  A second keeps it within the takeover time.
CONTROLLER_MAX_BACKOFF_MS = 1000


class Ovs:
    """A handle on one OVSDB (`db` is `unix:PATH` or any ovs-vsctl --db target)."""

    def __init__(
        self, db: str, *, timeout: float = 10.0, vsctl: str = "ovs-vsctl"
    ) -> None:
        self.db = db
        self.timeout = timeout
        self.vsctl = vsctl

    # -- plumbing -----------------------------------------------------------------

    def run(self, *args: str) -> str:
        """Run one ovs-vsctl command line; return its stdout."""
        cmd = [
            self.vsctl,
            f"--db={self.db}",
            f"--timeout={max(1, int(self.timeout))}",
            *args,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout + 2, check=False
            )
        except FileNotFoundError as exc:
            raise OvsError(f"{self.vsctl} not found: is Open vSwitch installed?") from exc
        except subprocess.TimeoutExpired as exc:
            raise OvsError(
                f"ovs-vsctl timed out after {self.timeout:g}s (is ovsdb-server at {self.db} up?)"
            ) from exc
        if proc.returncode != 0:
            msg = _one_line(proc.stderr) or f"exit code {proc.returncode}"
            raise OvsError(f"ovs-vsctl {_one_line(' '.join(args))[:120]}: {msg}")
        return proc.stdout

    # -- bridge -------------------------------------------------------------------

    def ensure_bridge(
        self,
        name: str,
        datapath_type: str,
        dpid: int | None = None,
        controller_targets: Sequence[str] | None = None,
    ) -> None:
        """Create the bridge if missing and make its settings right.

        `dpid` / `controller_targets` of None leave those settings as they are.
        The controller is only set when it differs, so an agent restart does not
        drop the switch's OpenFlow connection.
        """
        settings = [
            f"datapath_type={datapath_type}",
            "fail_mode=secure",
            "protocols=OpenFlow13",
            "other-config:disable-in-band=true",
        ]
        if dpid is not None:
            if not 0 < dpid < 2**64:
                raise OvsError(f"datapath id {dpid} out of range")
            settings.append(f"other-config:datapath-id={dpid:016x}")
        self.run("--may-exist", "add-br", name, "--", "set", "Bridge", name, *settings)
        if controller_targets is not None:
            self.set_controller(name, controller_targets)

    def get_controller(self, bridge: str) -> list[str]:
        return [line.strip() for line in self.run("get-controller", bridge).splitlines()
                if line.strip()]

    def set_controller(self, bridge: str, targets: Sequence[str]) -> bool:
        """Point the bridge at `targets` unless it already is; True if changed."""
        wanted = sorted(set(targets))
        if sorted(set(self.get_controller(bridge))) == wanted:
            return False
        if wanted:
            # Rows of our own (not set-controller's) so that max_backoff is in the same
            # transaction; the old rows go with the last reference to them.
            args: list[str] = []
            for i, target in enumerate(wanted):
                args += ["--", f"--id=@c{i}", "create", "Controller", f"target={_quote(target)}",
                         f"max_backoff={CONTROLLER_MAX_BACKOFF_MS}"]
            refs = ",".join(f"@c{i}" for i in range(len(wanted)))
            self.run(*args, "--", "set", "Bridge", bridge, f"controller=[{refs}]")
        else:
            self.run("del-controller", bridge)
        return True

    # -- TLS of the OpenFlow connections (docs/security.md, "OpenFlow") ---------------

    def get_ssl(self) -> tuple[str, str, str] | None:
        """(private key, certificate, CA certificate) of the SSL table, None if unset."""
        found: dict[str, str] = {}
        for line in self.run("get-ssl").splitlines():
            label, sep, value = line.partition(":")
            if sep:
                found[label.strip()] = value.strip()
        key, cert, ca = (found.get(k) for k in ("Private key", "Certificate", "CA Certificate"))
        return (key, cert, ca) if key and cert and ca else None

    def set_ssl(self, key: Path, cert: Path, ca: Path) -> bool:
        """Make ovs-vswitchd use this host's key and certificate, and trust `ca`, on its
        ssl: controller connections, unless it already does; True if changed.  OVS
        reads the files again when they change (a renewed certificate needs nothing)."""
        wanted = (str(key), str(cert), str(ca))
        if self.get_ssl() == wanted:
            return False
        self.run("set-ssl", *wanted)
        return True

    def bridge_exists(self, name: str) -> bool:
        try:
            self.run("br-exists", name)
        except OvsError:
            return False
        return True

    # -- ports --------------------------------------------------------------------

    def add_port(self, bridge: str, port: str, external_ids: dict[str, str]) -> None:
        args = ["--may-exist", "add-port", bridge, port]
        if external_ids:
            args += ["--", "set", "Interface", port]
            args += [f"external_ids:{k}={_quote(v)}" for k, v in sorted(external_ids.items())]
        self.run(*args)

    def set_external_ids(self, port: str, external_ids: dict[str, str]) -> None:
        """Set keys of a port's Interface external_ids; a key with an empty value goes."""
        kept = sorted((k, v) for k, v in external_ids.items() if v)
        gone = sorted(k for k, v in external_ids.items() if not v)
        commands: list[str] = []
        if kept:
            commands += ["--", "set", "Interface", port]
            commands += [f"external_ids:{k}={_quote(v)}" for k, v in kept]
        if gone:
            commands += ["--", "remove", "Interface", port, "external_ids", *gone]
        if commands:
            self.run(*commands)

    def del_port(self, bridge: str, port: str) -> None:
        """Remove a port; a port that is already gone is not an error."""
        self.run("--if-exists", "del-port", bridge, port)

    def list_ports(self, bridge: str) -> list[str]:
        return [p for p in self.run("list-ports", bridge).split() if p]

    def list_ports_with_endpoint(self, bridge: str) -> dict[str, str]:
        """{port name: endpoint id} for the bridge's ports that daolinet attached."""
        return {port: ids[ENDPOINT_KEY] for port, ids in self.endpoint_ports(bridge).items()}

    def endpoint_ports(self, bridge: str) -> dict[str, dict[str, str]]:
        """{port name: external_ids} for the bridge's ports that daolinet attached."""
        ports = set(self.list_ports(bridge))
        if not ports:
            return {}
        out = self.run("--format=json", "--columns=name,external_ids", "list", "Interface")
        try:
            table = json.loads(out)
        except json.JSONDecodeError as exc:
            raise OvsError(f"ovs-vsctl list Interface: bad JSON output: {exc}") from exc
        result: dict[str, dict[str, str]] = {}
        for row in table.get("data", []):
            name = _parse_ovs_value(row[0])
            ids = _parse_ovs_value(row[1])
            if isinstance(name, str) and name in ports and isinstance(ids, dict):
                endpoint = ids.get(ENDPOINT_KEY)
                if isinstance(endpoint, str) and endpoint:
                    result[name] = {str(k): str(v) for k, v in ids.items()}
        return result


def _quote(value: str) -> str:
    """Quote an OVSDB string atom when it is not a plain identifier."""
    if value and all(c.isalnum() or c in "-_." for c in value) and not value[0].isdigit():
        return value
    return json.dumps(value)
