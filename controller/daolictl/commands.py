"""daolictl: the operator CLI, a client of the controller's REST API.

    export DAOLINET_URL=https://controller:8080 DAOLINET_TOKEN=... \
           DAOLINET_CA=/etc/daolinet/pki/ca.crt
    daolictl network create web 10.1.0.0/24
    daolictl container list --host h1
    daolictl route list --json
    daolictl connections --verdict deny --follow

Human tables by default, `--json` for scripts.  An API error prints the API's
message on one line to stderr and exits 1; so does an unreachable API.

This module assembles the command groups of controller.daolictl.command_groups into one
typer app, in the order `--help` lists them, and is the console script's entry point.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from controller.cliutil import run_app
from controller.daolictl.client import DEFAULT_URL, Client
from controller.daolictl.command_groups import (
    connections,
    containers,
    firewalls,
    groups,
    hosts,
    networks,
    policies,
    replicas,
    routes,
    trace,
)

app = typer.Typer(
    name="daolictl",
    help="Operate a daolinet controller through its REST API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("connect")(policies.connect)
app.command("disconnect")(policies.disconnect)
app.command("trace")(trace.trace)
app.command("connections")(connections.connections)
app.add_typer(networks.app, name="network")
app.add_typer(containers.app, name="container")
app.add_typer(hosts.app, name="host")
app.add_typer(routes.app, name="route")
app.add_typer(replicas.app, name="replica")
app.add_typer(groups.app, name="group")
app.add_typer(policies.app, name="policy")
app.add_typer(firewalls.app, name="firewall")


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="DAOLINET_URL", help="Controller API base URL.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="DAOLINET_TOKEN", help="API bearer token."),
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option("--ca", envvar="DAOLINET_CA",
                     help="The deployment's CA certificate (PEM), which verifies an https "
                     "controller (default: the system's CAs)."),
    ] = None,
) -> None:
    ctx.obj = Client(url=url, token=token, ca=ca)


def run() -> None:
    """Entry point of the `daolictl` console script."""
    sys.exit(run_app(app, "daolictl"))


if __name__ == "__main__":
    run()
