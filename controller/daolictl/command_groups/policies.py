"""Pair policies: `daolictl connect|disconnect A B` (top-level commands) and
`daolictl policy show|clear|list`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import AuditOpt, JsonOpt, segment
from controller.daolictl.client import call

app = typer.Typer(help="Pair policies (set with `connect` / `disconnect`).", no_args_is_help=True)

ContainerA = Annotated[str, typer.Argument(metavar="A", help="Container name or id.")]
ContainerB = Annotated[str, typer.Argument(metavar="B", help="Container name or id.")]
POLICY_WORDS = {"allow": "connected", "deny": "disconnected"}


def _policy_path(a: str, b: str) -> str:
    return f"/policies/{segment(a)}/{segment(b)}"


def _policy_out(policy: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.print_json(policy)
    else:
        word = POLICY_WORDS.get(str(policy.get("action")), str(policy.get("action")))
        render.say(f"{policy.get('a')} <-> {policy.get('b')}: {word} ({policy.get('action')})"
                   + (", audit mode" if policy.get("audit") else ""))


def connect(
    ctx: typer.Context, a: ContainerA, b: ContainerB, audit: AuditOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Allow traffic between two containers, whatever else the policy says."""
    _put_policy(ctx, a, b, "allow", audit, as_json)


def disconnect(
    ctx: typer.Context, a: ContainerA, b: ContainerB, audit: AuditOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Deny traffic between two containers, whatever else the policy says."""
    _put_policy(ctx, a, b, "deny", audit, as_json)


def _put_policy(
    ctx: typer.Context, a: str, b: str, action: str, audit: bool, as_json: bool
) -> None:
    body = {"action": action, "audit": audit}
    _policy_out(call(ctx, "PUT", _policy_path(a, b), body=body), as_json)


@app.command("enforce")
def policy_enforce(
    ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False
) -> None:
    """Enforce a pair policy in audit mode: from now on it decides, and the
    connections it denies are revoked at once."""
    _policy_out(call(ctx, "PATCH", _policy_path(a, b), body={"audit": False}), as_json)


@app.command("show")
def policy_show(ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False) -> None:
    """Show the pair policy between two containers."""
    _policy_out(call(ctx, "GET", _policy_path(a, b)), as_json)


@app.command("clear")
def policy_clear(
    ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False
) -> None:
    """Remove the pair policy between two containers."""
    policy = call(ctx, "DELETE", _policy_path(a, b))
    if as_json:
        render.print_json(policy)
    else:
        render.say(f"cleared pair policy {policy.get('a')} <-> {policy.get('b')}")


@app.command("list")
def policy_list(
    ctx: typer.Context,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Only this container's.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List pair policies."""
    params = {"container": container} if container else None
    policies = call(ctx, "GET", "/policies", params=params)
    render.print_list(
        as_json,
        policies,
        [("a", "A", render.text), ("b", "B", render.text), ("action", "ACTION", render.text),
         ("audit", "MODE", render.mode), ("created_at", "CREATED", render.text)],
        "no pair policies",
    )
