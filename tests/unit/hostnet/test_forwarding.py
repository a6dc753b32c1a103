"""Docker's DOCKER-USER chain (hostnet/host/forwarding.py) against a fake `iptables`
that keeps its chains in a JSON file: the rules go to the chain's head in order, once;
without the chain (Docker's iptables off) nothing is done; a failing iptables is an
error that names the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hostnet.host.forwarding import COMMENT, DockerForwarding, ForwardingError

FAKE = '''#!{python}
import json, sys
state = {state!r}
chains = json.load(open(state))
args = sys.argv[1:]
assert args[:2] == ["-w", "5"], args
op, chain, rest = args[2], args[3], args[4:]
if op in {fail!r}:
    print("iptables: fake failure", file=sys.stderr); sys.exit(4)
if chain not in chains:
    print(f"iptables: No chain/target/match by that name.", file=sys.stderr); sys.exit(1)
rules = chains[chain]
if op == "-S":
    sys.exit(0)
if op == "-C":
    sys.exit(0 if rest in rules else 1)
if op == "-I":
    rules.insert(int(rest[0]) - 1, rest[1:])
    json.dump(chains, open(state, "w"))
    sys.exit(0)
sys.exit(2)
'''


def fake_iptables(tmp_path: Path, chains: dict[str, list[list[str]]],
                  fail: tuple[str, ...] = ()) -> tuple[str, Path]:
    """A fake `iptables` on `chains`; the operations in `fail` fail."""
    state = tmp_path / "chains.json"
    state.write_text(json.dumps(chains))
    script = tmp_path / "iptables"
    script.write_text(FAKE.format(python=sys.executable, state=str(state), fail=fail))
    script.chmod(0o755)
    return str(script), state


def test_the_rules_go_to_the_head_of_docker_user_once(tmp_path: Path) -> None:
    docker_return = ["-j", "RETURN"]
    iptables, state = fake_iptables(tmp_path, {"DOCKER-USER": [docker_return]})
    keeper = DockerForwarding("br-dl", "wg-h1", iptables=iptables)
    added = keeper.ensure()
    assert len(added) == 3
    rules = json.loads(state.read_text())["DOCKER-USER"]
    assert [r[:4] for r in rules[:3]] == [
        ["-i", "br-dl", "-m", "comment"], ["-o", "br-dl", "-m", "comment"],
        ["-i", "wg-h1", "-o", "wg-h1"]]
    assert all(r[-4:] == ["--comment", COMMENT, "-j", "ACCEPT"] for r in rules[:3])
    assert rules[3] == docker_return  # Docker's own rule stays, after ours
    assert keeper.ensure() == []  # again: nothing to add
    assert len(json.loads(state.read_text())["DOCKER-USER"]) == 4


def test_a_rule_taken_away_comes_back_in_its_place(tmp_path: Path) -> None:
    iptables, state = fake_iptables(tmp_path, {"DOCKER-USER": []})
    keeper = DockerForwarding("br-dl", None, iptables=iptables)
    keeper.ensure()
    chains = json.loads(state.read_text())
    first = chains["DOCKER-USER"].pop(0)  # an operator (or a firewall reload) removed it
    state.write_text(json.dumps(chains))
    assert keeper.ensure() == [" ".join(first)]
    assert json.loads(state.read_text())["DOCKER-USER"][0] == first


def test_without_docker_user_nothing_is_done(tmp_path: Path) -> None:
    iptables, state = fake_iptables(tmp_path, {"FORWARD": []})
    assert DockerForwarding("br-dl", "wg0", iptables=iptables).ensure() == []
    assert json.loads(state.read_text()) == {"FORWARD": []}
    assert DockerForwarding("br-dl", iptables=str(tmp_path / "absent")).ensure() == []


def test_a_failing_iptables_is_an_error_naming_the_command(tmp_path: Path) -> None:
    iptables, _ = fake_iptables(tmp_path, {"DOCKER-USER": []}, fail=("-S", "-C", "-I"))
    # the chain check fails too: the chain is taken as absent, nothing is done
    assert DockerForwarding("br-dl", iptables=iptables).ensure() == []
    iptables, _ = fake_iptables(tmp_path, {"DOCKER-USER": []}, fail=("-I",))
    with pytest.raises(ForwardingError,
                       match=r"iptables -w 5 -I DOCKER-USER 1 -i br-dl .*fake failure"):
        DockerForwarding("br-dl", iptables=iptables).ensure()
