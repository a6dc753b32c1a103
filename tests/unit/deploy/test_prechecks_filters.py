"""The prechecks' pure logic (roles/prechecks/filter_plugins/prechecks.py): who holds
a port daolinet needs, and which Python and platform a wheelhouse runs on."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PLUGIN = Path(__file__).resolve().parents[3] / "roles/prechecks/filter_plugins/prechecks.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prechecks_filters", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTERS: dict[str, Callable[..., Any]] = _load().FilterModule().filters()
listeners = FILTERS["daolinet_listeners"]
conflicts = FILTERS["daolinet_port_conflicts"]
wheel_targets = FILTERS["daolinet_wheel_targets"]
build_target = FILTERS["daolinet_build_target"]

# What the prechecks' shell task prints on a converged controller with etcd, plus a
# stranger on 9000 and kernel WireGuard's socket (no process).  The cgroups are a
# container's (cgroupns host): the unit is the innermost .service.
SS = """\
tcp  LISTEN 0  4096  0.0.0.0:8080  0.0.0.0:*  users:(("daolinet-contro",pid=812,fd=7))
tcp  LISTEN 0  4096  0.0.0.0:6653  0.0.0.0:*  users:(("daolinet-contro",pid=812,fd=9))
tcp  LISTEN 0  4096  198.18.11.10:2380  0.0.0.0:*  users:(("etcd",pid=640,fd=6))
tcp  LISTEN 0  4096  [::]:2379  [::]:*  users:(("etcd",pid=640,fd=8))
tcp  LISTEN 0  5  127.0.0.1:9000  0.0.0.0:*  users:(("python3",pid=990,fd=3))
udp  UNCONN 0  0  0.0.0.0:51820  0.0.0.0:*
udp  UNCONN 0  0  127.0.0.53%lo:53  0.0.0.0:*  users:(("systemd-resolve",pid=300,fd=13))
#cgroups
812 0::/system.slice/docker-ab12.scope/system.slice/daolinet-controller.service
640 0::/system.slice/docker-ab12.scope/system.slice/etcd.service
990 0::/user.slice/user-0.slice/session-3.scope
300 0::/system.slice/systemd-resolved.service
"""

CONTROLLER = ["daolinet-controller.service"]


def need(proto: str, port: int, owners: list[str], address: str = "0.0.0.0") -> dict[str, Any]:
    return {"proto": proto, "address": address, "port": port, "what": f"w{port}",
            "variable": f"v{port}", "owners": owners}


def test_listeners_name_the_unit_of_each_process() -> None:
    found = {(s["proto"], s["address"], s["port"]): s for s in listeners(SS)}
    assert found[("tcp", "0.0.0.0", 8080)]["units"] == CONTROLLER
    assert found[("tcp", "::", 2379)]["units"] == ["etcd.service"]
    assert found[("udp", "127.0.0.53", 53)]["processes"] == ["systemd-resolve"]
    assert found[("udp", "0.0.0.0", 51820)]["processes"] == []
    assert found[("tcp", "127.0.0.1", 9000)]["units"] == []


def test_ports_held_by_daolinets_own_units_pass_a_second_run() -> None:
    wanted = [need("tcp", 8080, CONTROLLER), need("tcp", 6653, CONTROLLER),
              need("tcp", 2379, ["etcd.service"]), need("tcp", 2380, ["etcd.service"]),
              need("udp", 51820, ["daolinet-wireguard.service", "kernel"])]
    assert conflicts(listeners(SS), wanted) == []


def test_a_port_held_by_another_program_is_refused_naming_it_and_the_variable() -> None:
    messages = conflicts(listeners(SS), [need("tcp", 9000, CONTROLLER)])
    assert len(messages) == 1
    assert "tcp port 9000" in messages[0] and "python3" in messages[0]
    assert "(v9000)" in messages[0]


def test_a_port_of_another_daolinet_unit_is_still_a_conflict() -> None:
    """etcd holding the controller's port is not the controller's own."""
    messages = conflicts(listeners(SS), [need("tcp", 2379, CONTROLLER)])
    assert messages and "etcd (etcd.service)" in messages[0]


def test_kernel_sockets_pass_only_when_daolinet_owns_the_kernel_side() -> None:
    """Without daolinet's WireGuard interface, a kernel socket on 51820 is another tunnel."""
    assert conflicts(listeners(SS), [need("udp", 51820, ["daolinet-wireguard.service"])])


def test_addresses_overlap_only_through_a_wildcard_or_equality() -> None:
    # resolved's 127.0.0.53:53 does not block the agent's responder on its own address...
    assert conflicts(listeners(SS), [need("udp", 53, [], "169.254.218.53")]) == []
    # ...but a DNS server on every address does.
    wildcard = "udp UNCONN 0 0 0.0.0.0:53 0.0.0.0:* users:((\"dnsmasq\",pid=5,fd=4))\n"
    assert conflicts(listeners(wildcard), [need("udp", 53, [], "169.254.218.53")])
    # and the controller on every address is blocked by anything on its port.
    assert conflicts(listeners(SS), [need("tcp", 2380, CONTROLLER)])


def test_tcp_and_udp_are_different_ports() -> None:
    assert conflicts(listeners(SS), [need("tcp", 51820, [])]) == []


WHEELS = [
    "./",
    "./pydantic_core-2.41.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "./cryptography-51.0.1-cp311-abi3-manylinux_2_34_x86_64.whl",
    "./daolinet-0.1.0-py3-none-any.whl",
    "./Routes-2.5.1-py2.py3-none-any.whl",
]


def test_a_wheelhouse_names_the_cpython_and_platform_of_its_binary_wheels() -> None:
    assert wheel_targets(WHEELS) == {"pythons": ["cp311"], "platforms": ["linux-x86_64"]}


def test_a_wheelhouse_built_on_a_mac_is_for_macos() -> None:
    mac = ["greenlet-3.5.6-cp312-cp312-macosx_11_0_arm64.whl"]
    assert wheel_targets(mac) == {"pythons": ["cp312"], "platforms": ["macos-aarch64"]}


def test_a_pure_python_wheelhouse_runs_anywhere() -> None:
    assert wheel_targets(["a-1-py3-none-any.whl", "b-2-cp37-abi3-any.whl"]) == {
        "pythons": [], "platforms": []}


@pytest.mark.parametrize(("printed", "expected"), [
    ("cp311 linux-x86_64", {"pythons": ["cp311"], "platforms": ["linux-x86_64"]}),
    ("cp312 macosx-14.0-arm64", {"pythons": ["cp312"], "platforms": ["macos-aarch64"]}),
    ("cp313 linux-aarch64\n", {"pythons": ["cp313"], "platforms": ["linux-aarch64"]}),
])
def test_a_build_python_names_its_target(printed: str, expected: dict[str, list[str]]) -> None:
    assert build_target(printed) == expected
