"""The host agent's packages import as their __init__ docstrings say: hostnet.host
changes the host and uses only the controller client of hostnet.agent; hostnet.docker
builds on hostnet.host and the same client; only hostnet.agent wires them; of the
controller, hostnet uses the desired-state models, the rules of addresses, the site
mesh, the stream's messages, the TLS contexts and the bounded WebSocket client."""

from __future__ import annotations

from pathlib import Path

import hostnet
from tests.unit.layering import daolinet_imports

HOSTNET = Path(hostnet.__file__).parent
CONTROLLER_ALLOWED = ("controller.desired.models", "controller.desired.addresses",
                      "controller.datapath.sites",
                      "controller.agents.messages", "controller.cliutil",
                      "controller.trust.tls", "controller.trust.wsclient")


def _imports_of(package: str) -> set[tuple[str, str]]:
    return {
        (str(path.relative_to(HOSTNET)), name)
        for path in sorted((HOSTNET / package).rglob("*.py"))
        for name in daolinet_imports(path)
    }


def test_host_and_docker_use_only_the_client_of_the_agent() -> None:
    for package in ("host", "docker"):
        wrong = {(f, n) for f, n in _imports_of(package)
                 if n.startswith("hostnet.agent") and n != "hostnet.agent.client"}
        assert wrong == set(), package


def test_host_does_not_import_docker() -> None:
    assert {(f, n) for f, n in _imports_of("host") if n.startswith("hostnet.docker")} == set()


def test_controller_imports_are_the_shared_models_only() -> None:
    wrong = {
        (f, n) for package in ("agent", "host", "docker") for f, n in _imports_of(package)
        if n.startswith("controller") and n not in CONTROLLER_ALLOWED
    }
    assert wrong == set()
