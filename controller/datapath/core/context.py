"""What every part of the core shares: its state, and the version of the desired
state pinned for the handler call in progress."""

from __future__ import annotations

from controller.datapath.state import CoreState
from controller.desired.index import DesiredView


class CoreContext:
    """The core's state and its pinned desired-state version.

    The facade pins one version (`pin`) at the start of every handler call, so a
    handler decides on one desired state however the inventory changes meanwhile,
    and a recorded call replays the same.
    """

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.desired = DesiredView()  # empty until the first call pins a version

    def pin(self, desired: DesiredView) -> None:
        self.desired = desired


class Part:
    """A part of the core: reads and writes the shared context."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    @property
    def state(self) -> CoreState:
        return self.ctx.state

    @property
    def desired(self) -> DesiredView:
        return self.ctx.desired
