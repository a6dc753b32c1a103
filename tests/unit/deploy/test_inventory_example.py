"""inventory/example, the real servers' inventory: it parses, it has the groups
site.yml uses, a host behind NAT and a relay, and names only variables the roles
define (besides Ansible's connection variables), each one commented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.unit.deploy.collections import ROOT
from tests.unit.deploy.playbook import ansible
from tests.unit.deploy.rolevars import role_variables

EXAMPLE = ROOT / "inventory" / "example"
VARIABLE_FILES = sorted((EXAMPLE / "group_vars").glob("*.yml")) + sorted(
    (EXAMPLE / "host_vars").glob("*.yml"))


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    run = ansible("ansible-inventory", "-i", str(EXAMPLE), "--list")
    assert run.returncode == 0, run.stderr
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def hosts_of(inventory: dict[str, Any], group: str) -> list[str]:
    return list(inventory.get(group, {}).get("hosts", []))


def test_it_has_the_groups_site_uses(inventory: dict[str, Any]) -> None:
    for group in ("daolinet_controller", "daolinet_etcd", "daolinet_hosts"):
        assert hosts_of(inventory, group), f"no hosts in {group}"


def test_every_host_has_a_site_an_address_and_the_mesh_a_tunnel_address(
    inventory: dict[str, Any],
) -> None:
    hostvars = inventory["_meta"]["hostvars"]
    for host, variables in hostvars.items():
        assert {"daolinet_site", "daolinet_address", "ansible_host"} <= set(variables), host
    mesh = hosts_of(inventory, "daolinet_controller") + hosts_of(inventory, "daolinet_hosts")
    tunnel = [hostvars[h]["wireguard_address"] for h in mesh]
    assert len(set(tunnel)) == len(tunnel)


def test_it_shows_hosts_behind_nat_and_a_relay_that_can_be_dialled(
    inventory: dict[str, Any],
) -> None:
    hostvars = inventory["_meta"]["hostvars"]
    behind_nat = {h for h, v in hostvars.items() if v.get("wireguard_behind_nat")}
    relays = {h for h, v in hostvars.items() if v.get("wireguard_relay")}
    assert len({hostvars[h]["daolinet_site"] for h in behind_nat}) >= 2
    assert relays and not relays & behind_nat


def test_its_etcd_cluster_passes_the_prechecks(inventory: dict[str, Any]) -> None:
    hostvars = inventory["_meta"]["hostvars"]
    members = hosts_of(inventory, "daolinet_etcd")
    assert len(members) % 2 == 1
    assert len({hostvars[h]["daolinet_site"] for h in members}) == 1
    assert not set(members) & set(hosts_of(inventory, "daolinet_hosts"))


def test_it_names_only_variables_the_roles_define(inventory: dict[str, Any]) -> None:
    known = set(role_variables())
    for host, variables in inventory["_meta"]["hostvars"].items():
        unknown = {v for v in variables if not v.startswith("ansible_")} - known
        assert not unknown, f"{host}: no role defines {sorted(unknown)}"


@pytest.mark.parametrize("path", VARIABLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLE)))
def test_every_variable_is_commented(path: Path) -> None:
    lines = path.read_text().splitlines()
    names = list(yaml.safe_load(path.read_text()) or {})
    for name in names:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
        assert index > 0 and lines[index - 1].startswith("#"), (
            f"{path.name}: {name} has no comment above it")
