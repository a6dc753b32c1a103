"""requirements.yml names exactly the collections the roles and playbooks use, pinned
to the versions the `ansible` package bundles; tests/requirements.yml those only the
lab and the tests use.  A role that starts using a collection fails here until it is
listed (ansible.utils was used by roles/wireguard and missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.deploy.collections import (
    ROOT,
    installed_collections,
    named_collections,
    required,
)

DEPLOYMENT = [ROOT / "roles", ROOT / "playbooks", ROOT / "inventory" / "example"]
TESTS_ONLY = [ROOT / "tests" / "molecule", ROOT / "inventory" / "lab", ROOT / "ansible.cfg"]


@pytest.fixture(scope="module")
def installed() -> dict[str, str]:
    return installed_collections()


def test_the_deployment_requirements_are_exactly_what_roles_and_playbooks_name(
    installed: dict[str, str],
) -> None:
    named = named_collections(DEPLOYMENT, installed)
    listed = required(ROOT / "requirements.yml")
    missing = {c: sorted(files) for c, files in named.items() if c not in listed}
    assert not missing, f"requirements.yml lacks collections the deployment uses: {missing}"
    unused = sorted(set(listed) - set(named))
    assert not unused, f"requirements.yml lists collections no role or playbook uses: {unused}"


def test_the_tests_requirements_cover_what_only_the_tests_name(
    installed: dict[str, str],
) -> None:
    deployment = required(ROOT / "requirements.yml")
    listed = required(ROOT / "tests" / "requirements.yml")
    named = named_collections(TESTS_ONLY, installed)
    only_tests = {c: sorted(f) for c, f in named.items() if c not in deployment}
    missing = {c: files for c, files in only_tests.items() if c not in listed}
    assert not missing, f"tests/requirements.yml lacks: {missing}"
    unused = sorted(set(listed) - set(only_tests))
    assert not unused, f"tests/requirements.yml lists collections the tests do not use: {unused}"
    both = sorted(set(listed) & set(deployment))
    assert not both, f"listed in both requirements files: {both}"


@pytest.mark.parametrize("requirements", ["requirements.yml", "tests/requirements.yml"])
def test_every_collection_is_pinned_to_the_bundled_version(
    requirements: str, installed: dict[str, str],
) -> None:
    for name, version in required(ROOT / requirements).items():
        assert name in installed, f"{requirements}: {name} is not bundled by the ansible package"
        assert version == installed[name], (
            f"{requirements}: {name} pinned to {version!r}, the ansible package bundles "
            f"{installed[name]}")


def test_the_scan_finds_a_collection_named_only_in_a_test_expression(
    tmp_path: Path, installed: dict[str, str],
) -> None:
    """The scanner sees tests, filters and module keys, and ignores dotted file names."""
    tasks = tmp_path / "tasks.yml"
    tasks.write_text(
        "- name: t\n  ansible.builtin.assert:\n    that: [x is ansible.utils.ipv4_address]\n"
        "- name: f\n  community.crypto.openssl_privatekey:\n    path: /k\n"
        "- name: g\n  ansible.builtin.template:\n    src: wireguard.json.j2\n"
        "- name: h\n  ansible.builtin.debug:\n    msg: \"{{ a | community.general.dict }}\"\n")
    named = named_collections([tasks], installed)
    assert set(named) == {"ansible.utils", "community.crypto", "community.general"}
