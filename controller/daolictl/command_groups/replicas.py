"""`daolictl replica ...`: the controller replicas, which one leads, forgetting one."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt, segment
from controller.daolictl.client import call

app = typer.Typer(
    help="Controller replicas (which one leads, the OpenFlow targets).", no_args_is_help=True
)


@app.command("list")
def replica_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the controller replicas and which one leads."""
    answer = call(ctx, "GET", "/replicas")
    if as_json:
        render.print_json(answer)
        return
    render.table(
        answer.get("replicas", []),
        [
            ("name", "NAME", render.text),
            ("site", "SITE", render.text),
            ("leader", "LEADER", render.yes_no),
            ("member", "MEMBER", render.yes_no),
            ("switches", "SWITCHES", lambda v: ",".join(v) if v else "-"),
            ("api", "API", render.text),
            ("openflow", "OPENFLOW", render.text),
            ("openflow_remote", "OPENFLOW REMOTE", render.text),
        ],
        "no replicas",
    )
    if answer.get("leader"):
        render.say(f"leader {answer['leader']}, generation {render.text(answer.get('generation'))}")
    else:
        render.say("no replica leads now (an election is under way)")


@app.command("remove")
def replica_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Replica name (see `replica list`).")],
) -> None:
    """Forget a replica taken out of service: hosts that register no longer get its
    OpenFlow target (refused while it leads or its API answers)."""
    call(ctx, "DELETE", f"/replicas/{segment(name)}")
    render.say(f"removed replica {name}")
