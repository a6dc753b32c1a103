"""Runs ansible-playbook of this checkout (the worktree's roles and ansible.cfg)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.deploy.collections import ROOT

ANSIBLE_BIN = Path(sys.executable).parent


def ansible(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    return subprocess.run([str(ANSIBLE_BIN / tool), *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def list_tasks(inventory: Path, *args: str) -> dict[str, list[str]]:
    """Play name -> the names of the tasks a run with these arguments would run."""
    run = ansible("ansible-playbook", "--list-tasks", "-i", str(inventory),
                  "playbooks/site.yml", *args)
    assert run.returncode == 0, run.stderr
    plays: dict[str, list[str]] = {}
    current: list[str] = []
    for line in run.stdout.splitlines():
        text = line.split("\tTAGS:")[0].strip()
        if line.startswith("  play #"):
            current = plays.setdefault(text.split("): ", 1)[1], [])
        elif line.startswith("      ") and text:
            current.append(text)
    return plays
