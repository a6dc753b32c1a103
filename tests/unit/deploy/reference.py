"""docs/reference.md's table of variables, made from the roles (so it cannot drift).

    env -u PYTHONPATH .venv/bin/python -m tests.unit.deploy.reference   # rewrites it

tests/unit/deploy/test_reference.py fails while the file differs from what this makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.unit.deploy.collections import ROOT
from tests.unit.deploy.rolevars import ROLES, role_variables

REFERENCE = ROOT / "docs" / "reference.md"
BEGIN = "<!-- variables: made by tests/unit/deploy/reference.py -->"
END = "<!-- end of variables -->"
MAX_DEFAULT = 48


def _default(value: Any, role: str) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(str(text).split())
    if "{%" in text or len(text) > MAX_DEFAULT:
        return f"(computed: roles/{role}/defaults/main.yml)"
    return f"`{text}`".replace("|", "\\|") if text else '`""`'


def _description(role: str, name: str) -> str:
    specs = ROLES / role / "meta" / "argument_specs.yml"
    if not specs.exists():
        return ""
    options = yaml.safe_load(specs.read_text())["argument_specs"]["main"]["options"]
    text = options.get(name, {}).get("description", "")
    if isinstance(text, list):
        text = " ".join(text)
    return " ".join(str(text).split()).replace("|", "\\|")


def render_variables() -> str:
    rows = [BEGIN, "", "| variable | role | default | what |", "|---|---|---|---|"]
    for var in sorted(role_variables().values(), key=lambda v: (v.role, v.name)):
        rows.append(f"| `{var.name}` | {var.role} | {_default(var.default, var.role)} | "
                    f"{_description(var.role, var.name)} |")
    rows += ["", END]
    return "\n".join(rows)


def current_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def rewrite(path: Path = REFERENCE) -> None:
    text = path.read_text()
    path.write_text(text.replace(current_section(text), render_variables()))


if __name__ == "__main__":
    rewrite()
