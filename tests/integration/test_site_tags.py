"""site.yml's tags and its refusals of partial runs (docs/deploy.md, "Changing one
host or one component").

A component's tag runs that component's tasks, and the read-only tasks of the others
that publish what it reads (tagged always), never another component's changes.  A run
--limit leaves a host out of refuses, before any change, in the plays that need every
host; the refusal itself is run here on this machine's localhost (it only reads).
Here, not in the unit layer: each case runs ansible-playbook (seconds apiece); no root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.deploy.collections import ROOT
from tests.unit.deploy.playbook import ansible, list_tasks

LAB = ROOT / "inventory" / "lab"
FACTS = {  # component -> a task that publishes what other plays read
    "openvswitch": "openvswitch : Choose the datapath",
    "wireguard": "wireguard : Publish this host's mesh entry",
    "daolinet": "daolinet : Publish this host's place (read by the other roles through hostvars)",
}
CHANGES = {  # component -> a task that changes the host
    "openvswitch": "openvswitch : Install Open vSwitch",
    "wireguard": "wireguard : Install WireGuard",
    "etcd": "etcd : Configure the member",
    "controller": "controller : Create the state directory",
    "hostnet": "hostnet : Install the Docker engine",
    "daolinet": "daolinet : Install daolinet from the wheelhouse",
}


def all_tasks(plays: dict[str, list[str]]) -> set[str]:
    return {task for tasks in plays.values() for task in tasks}


@pytest.fixture(scope="module")
def whole_run() -> set[str]:
    return all_tasks(list_tasks(LAB))


def test_a_whole_run_has_every_component(whole_run: set[str]) -> None:
    assert set(CHANGES.values()) <= whole_run
    assert "prechecks : The ports daolinet needs" in whole_run


@pytest.mark.parametrize(("tag", "changes"), [
    ("openvswitch", {"openvswitch"}),
    ("hostnet", {"hostnet", "daolinet"}),
    ("controller", {"controller", "daolinet"}),
])
def test_a_components_tag_changes_only_it_and_sees_every_fact(tag: str, changes: set[str]) -> None:
    tasks = all_tasks(list_tasks(LAB, "--tags", tag))
    assert "prechecks : The ports daolinet needs" in tasks
    assert "Gather the network facts (the default address)" in tasks
    assert set(FACTS.values()) <= tasks
    assert {CHANGES[c] for c in changes} <= tasks
    others = {task for c, task in CHANGES.items() if c not in changes}
    assert not tasks & others, f"--tags {tag} runs {tasks & others}"


def test_the_pki_tag_runs_the_certificates_of_every_holder_only() -> None:
    tasks = all_tasks(list_tasks(LAB, "--tags", "pki"))
    assert {"The member's key and certificate (the etcd CA)",
            "The replica's key and certificate (the deployment CA)",
            "The host's key and certificate (the deployment CA)"} <= tasks
    assert not tasks & set(CHANGES.values())


def test_skipping_the_prechecks_leaves_them_out() -> None:
    plays = list_tasks(LAB, "--skip-tags", "prechecks")
    assert plays["Prechecks"] == []


def _local_inventory(tmp_path: Path, groups: dict[str, list[str]]) -> Path:
    lines = ["all:", "  vars:", "    ansible_connection: local",
             f"    ansible_python_interpreter: {sys.executable}",
             "  children:"]
    for group, hosts in groups.items():
        lines += [f"    {group}:", "      hosts:"] + [f"        {h}:" for h in hosts]
    path = tmp_path / "hosts.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


REFUSE = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_tasks: {tasks}
      vars:
        refuse_what: the thing
        refuse_needs: "{{{{ groups['all'] }}}}"
        refuse_reason: it needs them all
    - ansible.builtin.debug:
        msg: AFTER-THE-CHECK
"""


@pytest.fixture
def refuse_play(tmp_path: Path) -> Path:
    play = tmp_path / "refuse.yml"
    play.write_text(REFUSE.format(tasks=ROOT / "playbooks/tasks/refuse-partial.yml"))
    return play


def test_a_partial_run_is_refused_naming_the_hosts_left_out(
    tmp_path: Path, refuse_play: Path,
) -> None:
    inventory = _local_inventory(tmp_path, {"g": ["h1", "h2", "h3"]})
    run = ansible("ansible-playbook", "-i", str(inventory), "--limit", "h1", str(refuse_play))
    assert run.returncode != 0
    expected = "the thing needs h2, h3 in this run too (it needs them all)"
    assert expected in run.stdout, run.stdout[-3000:]
    assert "AFTER-THE-CHECK" not in run.stdout, run.stdout[-3000:]


def test_a_whole_run_passes_the_refusal(tmp_path: Path, refuse_play: Path) -> None:
    inventory = _local_inventory(tmp_path, {"g": ["h1", "h2", "h3"]})
    run = ansible("ansible-playbook", "-i", str(inventory), str(refuse_play))
    assert run.returncode == 0, run.stdout
    assert run.stdout.count("AFTER-THE-CHECK") == 3


def test_site_refuses_a_limited_wireguard_run_before_any_change(tmp_path: Path) -> None:
    inventory = _local_inventory(tmp_path, {"daolinet_controller": ["c1"],
                                            "daolinet_hosts": ["h1", "h2"]})
    run = ansible("ansible-playbook", "-i", str(inventory), "--limit", "h1",
                  "--tags", "wireguard", "--skip-tags", "prechecks", "playbooks/site.yml")
    assert run.returncode != 0
    assert "the WireGuard mesh needs c1, h2 in this run too" in run.stdout, run.stdout[-3000:]
    assert "wireguard : " not in run.stdout, run.stdout[-3000:]


def test_site_refuses_to_start_part_of_a_new_etcd_cluster(tmp_path: Path) -> None:
    inventory = _local_inventory(tmp_path, {"daolinet_etcd": ["e1", "e2", "e3"]})
    run = ansible("ansible-playbook", "-i", str(inventory), "--limit", "e1", "--tags", "etcd",
                  "--skip-tags", "prechecks", "-e", f"etcd_data_dir={tmp_path}/none",
                  "playbooks/site.yml")
    assert run.returncode != 0
    assert "a new etcd cluster needs e2, e3 in this run too" in run.stdout, run.stdout[-3000:]
    assert "etcd : " not in run.stdout, run.stdout[-3000:]
