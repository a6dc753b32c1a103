"""What the API routers need from the rest of the controller, as one context object.

create_app() stores an ApiContext on app.state.ctx; routers take it with the
`Ctx` dependency.  The runtime (live hot-plug state and the agent stream hub) is a
Protocol here so the API can be tested without a running OpenFlow app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, Request

if TYPE_CHECKING:
    from controller.desired.inventory import Inventory


class RuntimeView(Protocol):
    """What the API reads of controller.datapath.runtime.DatapathRuntime (tests give a fake)."""

    @property
    def master(self) -> int | None:
        """The leadership's generation while this replica leads (OpenFlow master of
        the switches), else None."""
        ...

    @property
    def mastered(self) -> set[int]:
        """The dpids of the switches whose role reply says this replica is master."""
        ...

    @property
    def connected(self) -> set[int]:
        """The dpids of the switches connected to this replica, whatever their role."""
        ...

    @property
    def refusals(self) -> dict[str, int]:
        """Messages the switches refused, by kind ("role", "slave")."""
        ...

    def serves(self, host: str) -> bool:
        """Whether this replica holds `host`'s agent stream (masters its switch)."""
        ...

    def owner_api(self, host: str) -> str | None:
        """The API URL of the replica that masters `host`'s switch (spread masters)."""
        ...

    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        """The live hot-plug connections (see docs/architecture.md, GET /routes)."""
        ...


@dataclass
class ApiContext:
    inventory: Inventory
    token: str
    runtime: RuntimeView
    openflow_host: str  # listen address of the OpenFlow endpoint ("0.0.0.0" = any)
    openflow_port: int
    readonly_token: str = ""  # may only read ("" = no such token)
    agent_token: str = ""  # host agents: hosts, streams, containers ("" = none)
    # The OpenFlow targets for a switch of a site (replicated controllers: every
    # replica's; controller/cluster/leases.py).  None, or no target for that site: ours,
    # derived from the address the agent reached the API at (api/hosts.py).
    openflow_targets: Callable[[str], list[str]] | None = None
    # This controller's replica record (controller/cluster/leases.py, `replica_record`): the
    # standalone controller's GET /replicas answers it; None: no record (a bare app)
    replica: dict[str, Any] | None = None


def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]
