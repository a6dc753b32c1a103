"""Fixtures of the integration tests: testbeds of network namespaces + OVS.

* Every test in this directory is marked ``integration``.
* At session start, leftovers of crashed earlier runs (netns/links ``dlt*`` whose
  owner is gone) are removed.
* ``testbed_factory`` builds testbeds for one test; modules that share a testbed
  use :func:`make_testbed` in a module-scoped fixture.
* When a test that uses a testbed fails, the tails of the controller, agent and
  ovs-vswitchd logs and the table-1/route state are added to its report.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The repository root: `tests.*` (the etcd cluster, and the unit suites that
# test_*_on_etcd.py run again on etcd) is importable however pytest was started.
sys.path.append(str(Path(__file__).parents[2]))

from testbed import Testbed, TestbedError, cleanup_leftovers, skip_reason
from testbed.docker import Dockerd, close_engines, missing_docker

INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def require_testbed(*, daolinet: bool = True) -> None:
    """Skip (saying exactly what is missing) unless a testbed can run here."""
    reason = skip_reason(daolinet=daolinet)
    if reason:
        pytest.skip(reason=reason)


@contextlib.contextmanager
def make_testbed(**kwargs: Any) -> Iterator[Testbed]:
    """Build a testbed (skipping when the machine cannot) and always tear it down."""
    require_testbed(daolinet=kwargs.get("daolinet", True))
    tb = Testbed(**kwargs)
    try:
        tb.start()
        yield tb
    finally:
        tb.close()


@pytest.fixture(scope="session", autouse=True)
def _remove_leftovers() -> None:
    if skip_reason(daolinet=False) is None:
        removed = cleanup_leftovers()
        if removed:
            print(f"\nremoved testbed leftovers: {', '.join(removed)}", file=sys.stderr)


@pytest.fixture
def testbed_factory() -> Iterator[Callable[..., Testbed]]:
    """`testbed_factory(hosts=2, idle_timeout=3, daolinet=True, ...)` → a started
    Testbed, torn down after the test whatever happens."""
    with contextlib.ExitStack() as beds:
        yield lambda **kwargs: beds.enter_context(make_testbed(**kwargs))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {}) or {}
        for value in funcargs.values():
            if isinstance(value, Testbed) and value.dir.exists():
                with contextlib.suppress(Exception):
                    report.sections.append(("testbed state", value.state_dump()))
                with contextlib.suppress(Exception):
                    report.sections.append(("testbed logs", value.log_tails()))
    return report


@dataclass
class DockerLab:
    """Three testbed hosts; h1 and h2 each run their own dockerd (own data root, the
    busybox image imported), h3 has no Docker."""

    tb: Testbed
    d1: Dockerd
    d2: Dockerd


@contextlib.contextmanager
def make_docker_lab(*, firewall: bool = False) -> Iterator[DockerLab]:
    """A DockerLab; `firewall`: its dockerds run with Docker's iptables rules as
    installed (FORWARD policy DROP) instead of without."""
    require_testbed()
    missing = missing_docker()
    if missing:
        pytest.skip(reason="Docker tests need: " + "; ".join(missing))
    tb = Testbed(["h1", "h2", "h3"], docker_hosts=["h1", "h2"], idle_timeout=3)
    dockerds: list[Dockerd] = []
    try:
        tb.start()
        for name in ("h1", "h2"):  # both engines start side by side
            d = Dockerd(tb, name, firewall=firewall)
            dockerds.append(d)
            d.spawn()
        for d in dockerds:
            try:
                d.wait_started()
            except TestbedError as exc:
                pytest.skip(reason=f"dockerd cannot start here: {exc}")
            d.import_image()
        yield DockerLab(tb, dockerds[0], dockerds[1])
    finally:
        close_engines(dockerds)
        tb.close()


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[DockerLab]:
    """A DockerLab per module (test_docker.py, test_docker_options.py)."""
    with make_docker_lab() as lab:
        yield lab
