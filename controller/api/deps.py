"""What the API routers need from the rest of the controller, as one typed context.

controller/main.py makes the ApiContext and gives it to create_app(), which makes
an `ApiApp` holding it; routers take it, or one of its parts, through the typed
dependencies at the end (`Ctx`, `RuntimeDep`, `HubDep`, `RolesDep`), never from
app.state.  The runtime is a Protocol here so the API can be tested without a
running OpenFlow app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from controller.agents.hub import AgentHub
from controller.api.counterfloor import CounterFloor
from controller.cluster.leases import Lease
from controller.cluster.masters import Masters
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.needs import Needs
from controller.datapath.runtime import ImportWait
from controller.datapath.state import Counters
from controller.trust.revocation import Revocations
from controller.trust.tls import ClientContext

if TYPE_CHECKING:
    from controller.desired.inventory import Inventory


# docs/architecture.md, "Metrics" and "Readiness"
DEFAULT_METRICS_HOSTS = 500
DEFAULT_READY_WAIT = 30.0


class RuntimeView(Protocol):
    """What the API reads of controller.datapath.runtime.DatapathRuntime (tests give a fake)."""

    def serves(self, host: str) -> bool:
        """Whether this replica holds `host`'s agent stream (masters its switch)."""
        ...

    def owner_api(self, host: str) -> str | None:
        """The API URL of the replica that masters `host`'s switch (spread masters)."""
        ...

    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        """The live hot-plug connections (see docs/architecture.md, GET /routes)."""
        ...

    def counters(self) -> tuple[Counters, int]:
        """The core's counters (setup latencies included), the live connection count."""
        ...

    def host_counters(self) -> dict[str, tuple[Counters, int]]:
        """Per host: its counters and its live connections."""
        ...

    def import_needs(
        self, host: str, generation: int, token: int, needs: dict[int, Needs]
    ) -> ImportWait:
        """Another replica's export for our `host` (spread masters)."""
        ...

    def forget_import(self, wait: ImportWait) -> None:
        """Its exporter gave up waiting."""
        ...


@dataclass
class ApiContext:
    inventory: Inventory
    token: str
    runtime: RuntimeView
    openflow_host: str  # listen address of the OpenFlow endpoint ("0.0.0.0" = any)
    openflow_port: int
    openflow_scheme: str = "tcp"  # of our targets: "ssl" with TLS (switches' certificates)
    readonly_token: str = ""  # may only read ("" = no such token)
    agent_token: str = ""  # host agents: hosts, streams, containers ("" = none)
    # The OpenFlow targets for a switch of a site (replicated controllers: every
    # replica's; controller/cluster/leases.py).  None, or no target for that site: ours,
    # derived from the address the agent reached the API at (api/hosts.py).
    openflow_targets: Callable[[str], list[str]] | None = None
    # This controller's replica record (controller/cluster/leases.py, `replica_record`): the
    # standalone controller's GET /replicas answers it; None: no record (a bare app)
    replica: dict[str, Any] | None = None
    # This replica's roles (controller/cluster/roles.py): the switches it masters.
    roles: Roles = field(default_factory=Roles)
    # The hub of the agent streams (None: a bare app, no agent is served).
    hub: AgentHub | None = None
    # The leadership lease (None: a bare app) and, with masters spread over
    # replicas, the memberships and the assignment (controller/cluster/masters.py).
    leadership: Lease | None = None
    masters: Masters | None = None
    # Switch connections refused, by reason (controller/openflow/admission.py).
    switch_refusals: Callable[[], dict[str, int]] = dict
    # The API serves HTTPS (--tls-*): hosts and replicas present their certificates,
    # the agent token may only read (controller/api/auth.py).
    tls: bool = False
    # The revoked credentials (None: no TLS, nothing to revoke).
    revocations: Revocations | None = None
    # The context of this replica's calls to the other replicas' APIs (its replica
    # certificate; None: plain HTTP).
    client_tls: ClientContext | None = None
    # The connection log (controller/connlog/; None: off, GET /connections answers 404).
    connlog: ConnectionLog | None = None
    # /metrics (controller/api/metrics.py): the hosts with series of their own, at
    # most, and the counters' last values (they never go down across scrapes).
    metrics_hosts: int = DEFAULT_METRICS_HOSTS
    metrics_floor: CounterFloor = field(default_factory=CounterFloor)
    # /readyz (controller/api/readiness.py): when this replica started (`clock`'s
    # seconds) and how long after it a registered switch that has not connected, or
    # an agent that does not stream, keeps the replica unready.
    started: float = field(default_factory=time.monotonic)
    ready_wait: float = DEFAULT_READY_WAIT
    clock: Callable[[], float] = time.monotonic

    def member_apis(self) -> list[str] | None:
        """The API URLs of the other live members (None: masters are not spread)."""
        return self.masters.member_apis() if self.masters is not None else None

    def leads(self) -> bool:
        """Whether this replica leads: assigns the switches (spread masters), or
        masters them all (the one-master model)."""
        if self.masters is not None:
            return self.masters.leadership.held
        return self.roles.master is not None


class ApiApp(FastAPI):
    """The API app, holding its context (typed, given to its constructor)."""

    def __init__(self, ctx: ApiContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx


def get_ctx(conn: HTTPConnection) -> ApiContext:
    app: ApiApp = conn.app
    return app.ctx


def get_runtime(conn: HTTPConnection) -> RuntimeView:
    return get_ctx(conn).runtime


def get_hub(conn: HTTPConnection) -> AgentHub | None:
    return get_ctx(conn).hub


def get_roles(conn: HTTPConnection) -> Roles:
    return get_ctx(conn).roles


Ctx = Annotated[ApiContext, Depends(get_ctx)]
RuntimeDep = Annotated[RuntimeView, Depends(get_runtime)]
HubDep = Annotated[AgentHub | None, Depends(get_hub)]
RolesDep = Annotated[Roles, Depends(get_roles)]
