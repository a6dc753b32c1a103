"""The operator's docs match the code: docs/reference.md's variables are made from
the roles, its ports, units and files are the roles' defaults, and every command,
unit, variable and file the deployment docs name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.daolictl.commands import app as daolictl
from tests.unit.clirunner import CliRunner
from tests.unit.deploy.collections import ROOT
from tests.unit.deploy.reference import REFERENCE, current_section, render_variables
from tests.unit.deploy.rolevars import (
    ROLES,
    published_facts,
    resolved_defaults,
    role_variables,
    site_groups,
)

DOCS = [ROOT / "docs" / name for name in ("deploy.md", "troubleshooting.md", "reference.md")]
ROLES_TEXT = "\n".join(p.read_text() for p in ROLES.rglob("*") if p.is_file()
                       and p.suffix in (".yml", ".j2", ".sh", ".py"))
PREFIXES = tuple(f"{role.name}_" for role in ROLES.iterdir() if (role / "tasks").is_dir())


def table_rows(section: str) -> list[list[str]]:
    text = REFERENCE.read_text()
    body = text[text.index(f"## {section}"):]
    body = body[:body.find("\n## ", 1)] if "\n## " in body[1:] else body
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in body.splitlines() if line.startswith("| `")]


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text) + [
        line.strip() for line in text.splitlines() if line.startswith("    ")]


def test_the_variables_are_those_the_roles_define() -> None:
    assert current_section(REFERENCE.read_text()) == render_variables(), (
        "docs/reference.md is out of date: env -u PYTHONPATH .venv/bin/python -m "
        "tests.unit.deploy.reference")


def test_the_ports_are_the_roles_defaults() -> None:
    variables = role_variables()
    rows = table_rows("Ports")
    assert len(rows) >= 7
    for port, on, _who, variable in rows:
        default = variables[variable.strip("`")].default
        if isinstance(default, int):
            assert port.startswith(f"`{default}/"), f"{variable}: {port} is not {default}"
        else:
            assert str(default) in on, f"{variable}: {default} not in {on}"


def test_the_units_are_the_roles() -> None:
    for cells in table_rows("Units"):
        for unit in re.findall(r"`([a-z-]+\.(?:service|timer|socket))`", cells[0]):
            name = unit.rsplit(".", 1)[0]
            assert name in ROLES_TEXT, f"{unit}: no role makes or names it"


def test_the_files_are_the_roles() -> None:
    resolved = resolved_defaults()
    for cells in table_rows("Files"):
        path = cells[0].strip("`")
        if path.startswith("/"):
            assert path in ROLES_TEXT or path in resolved, f"{path}: no role writes it"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_role_variable_the_docs_name_exists(doc: Path) -> None:
    known = set(role_variables()) | published_facts() | site_groups()
    named = {w for span in code_spans(doc.read_text())
             for w in re.findall(r"\b[a-z]+_[a-z_]+\b", span) if w.startswith(PREFIXES)}
    assert named, f"{doc.name} names no role variable"
    assert not named - known, f"{doc.name}: no role defines {sorted(named - known)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_unit_the_docs_name_is_in_the_reference(doc: Path) -> None:
    units = {cell for cells in table_rows("Units")
             for cell in re.findall(r"`([a-z-]+)\.(?:service|timer|socket)`", cells[0])}
    text = doc.read_text()
    for unit in re.findall(r"(?:journalctl -u|systemctl \w+) ([a-z-]+)", text):
        assert unit in units, f"{doc.name}: unit {unit} is not in docs/reference.md"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_daolictl_command_the_docs_name_exists(doc: Path) -> None:
    commands = {tuple(m.split()) for m in re.findall(
        r"\bdaolictl ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", doc.read_text())}
    runner = CliRunner()
    for words in sorted(commands):
        result = runner.invoke(daolictl, [*words, "--help"])
        if result.exit_code != 0 and len(words) == 2:  # "daolictl trace web1": an argument
            result = runner.invoke(daolictl, [words[0], "--help"])
        assert result.exit_code == 0, f"{doc.name}: daolictl {' '.join(words)}: {result.output}"
    assert doc.name == "reference.md" or commands, f"{doc.name} names no daolictl command"


def test_a_command_daolictl_lacks_is_seen() -> None:
    assert CliRunner().invoke(daolictl, ["route", "lst", "--help"]).exit_code != 0


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_the_docs_name_exists(doc: Path) -> None:
    for path in set(re.findall(
            r"\b((?:docs|roles|playbooks|inventory|scripts|tests)/[\w./-]*\w)", doc.read_text())):
        if not re.search(r"/[A-Z]+\b", path):  # inventory/NAME: a placeholder
            assert (ROOT / path).exists(), f"{doc.name}: {path} does not exist"
