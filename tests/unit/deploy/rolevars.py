"""The variables the roles define: their defaults and their argument specs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.unit.deploy.collections import ROOT

ROLES = ROOT / "roles"


@dataclass(frozen=True)
class RoleVariable:
    role: str
    name: str
    default: Any
    documented: bool  # in the role's meta/argument_specs.yml


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def role_variables() -> dict[str, RoleVariable]:
    """Every variable of roles/*/defaults and of the argument specs, by name."""
    found: dict[str, RoleVariable] = {}
    for role_dir in sorted(p for p in ROLES.iterdir() if (p / "tasks").is_dir()):
        defaults = _load(role_dir / "defaults" / "main.yml")
        specs = _load(role_dir / "meta" / "argument_specs.yml")
        options = specs.get("argument_specs", {}).get("main", {}).get("options", {}) or {}
        for name in sorted(set(defaults) | set(options)):
            spec = options.get(name, {})
            default = defaults.get(name, spec.get("default"))
            found[name] = RoleVariable(role_dir.name, name, default, name in options)
    return found


def published_facts() -> set[str]:
    """The facts the roles set (set_fact), which other roles read through hostvars."""
    facts: set[str] = set()
    for path in ROLES.glob("*/tasks/*.yml"):
        for task in yaml.safe_load(path.read_text()) or []:
            args = task.get("ansible.builtin.set_fact") if isinstance(task, dict) else None
            if isinstance(args, dict):
                facts.update(args)
    return facts


def site_groups() -> set[str]:
    """The inventory groups playbooks/site.yml uses."""
    return set(re.findall(r"\bdaolinet_[a-z]+\b",
                          (ROOT / "playbooks" / "site.yml").read_text())) & {
        "daolinet_controller", "daolinet_etcd", "daolinet_hosts"}


def resolved_defaults() -> set[str]:
    """String defaults with the simple {{ var }} of other defaults filled in."""
    defaults = {n: v.default for n, v in role_variables().items() if isinstance(v.default, str)}
    simple = re.compile(r"\{\{ ([a-z_]+) \}\}")
    values = set()
    for value in defaults.values():
        for _ in range(5):
            value = simple.sub(lambda m: str(defaults.get(m[1], m[0])), value)
        values.add(value)
    return values
