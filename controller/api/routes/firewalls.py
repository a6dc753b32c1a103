"""/api/v1/firewalls: ordered firewall rules and published ports."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from controller.api.auth import RequireAdmin
from controller.api.deps import ApiContext, Ctx
from controller.api.schemas import (
    AuditPatch,
    FirewallRuleIn,
    FirewallRuleOut,
    FirewallsOut,
    PublishedPortIn,
    PublishedPortOut,
)
from controller.desired.errors import NotFound
from controller.desired.models import PublishedPort

router = APIRouter(prefix="/firewalls", tags=["firewalls"], dependencies=[RequireAdmin])


def _port(ctx: ApiContext, port: PublishedPort) -> PublishedPortOut:
    endpoint = ctx.inventory.index.endpoint(port.container)
    return PublishedPortOut.of(port, endpoint.host if endpoint is not None else None)


def _rules(ctx: ApiContext, network: str | None, group: str | None) -> list[FirewallRuleOut]:
    rules = ctx.inventory.rules()
    if network is not None or group is not None:
        rules = [
            r
            for r in rules
            if (r.target_kind == "network" and r.target == network)
            or (r.target_kind == "group" and r.target == group)
        ]
    return [FirewallRuleOut.of(r) for r in rules]


@router.get("", summary="Firewall rules and published ports")
def list_firewalls(
    ctx: Ctx,
    network: str | None = Query(default=None, description="Only rules on this network"),
    group: str | None = Query(default=None, description="Only rules on this group"),
    container: str | None = Query(default=None, description="Only this container's ports"),
) -> FirewallsOut:
    ports = ctx.inventory.published_ports(container)
    if container is None and (network is not None or group is not None):
        ports = []
    rules = _rules(ctx, network, group)
    if container is not None and network is None and group is None:
        rules = []
    return FirewallsOut(rules=rules, ports=[_port(ctx, p) for p in ports])


# --- rules ----------------------------------------------------------------------------
@router.get("/rules", summary="List firewall rules (by target, in evaluation order)")
def list_rules(
    ctx: Ctx,
    network: str | None = Query(default=None, description="Only rules on this network"),
    group: str | None = Query(default=None, description="Only rules on this group"),
) -> list[FirewallRuleOut]:
    return _rules(ctx, network, group)


@router.post("/rules", status_code=status.HTTP_201_CREATED, summary="Add a firewall rule")
def create_rule(body: FirewallRuleIn, ctx: Ctx) -> FirewallRuleOut:
    rule = ctx.inventory.add_rule(
        body.target_kind,
        body.target,
        body.action,
        source_kind=body.source.kind,
        source_value=body.source.value,
        protocol=body.protocol,
        ports=body.ports,
        position=body.position,
        audit=body.audit,
    )
    return FirewallRuleOut.of(rule)


@router.patch(
    "/rules/{rule_id}",
    summary="Put a firewall rule in audit mode, or enforce it ({\"audit\": false})",
)
def patch_rule(rule_id: str, body: AuditPatch, ctx: Ctx) -> FirewallRuleOut:
    return FirewallRuleOut.of(ctx.inventory.set_rule_audit(rule_id, body.audit))


@router.get("/rules/{rule_id}", summary="Show one firewall rule")
def get_rule(rule_id: str, ctx: Ctx) -> FirewallRuleOut:
    return FirewallRuleOut.of(ctx.inventory.rule(rule_id))


@router.delete("/rules/{rule_id}", summary="Delete a firewall rule")
def delete_rule(rule_id: str, ctx: Ctx) -> FirewallRuleOut:
    return FirewallRuleOut.of(ctx.inventory.delete_rule(rule_id))


# --- published ports ------------------------------------------------------------------
@router.get("/ports", summary="List published ports")
def list_ports(
    ctx: Ctx,
    container: str | None = Query(default=None, description="Only this container's"),
) -> list[PublishedPortOut]:
    return [_port(ctx, p) for p in ctx.inventory.published_ports(container)]


@router.post(
    "/ports",
    status_code=status.HTTP_201_CREATED,
    summary="Publish host:port[/proto] as container:port",
)
def create_port(body: PublishedPortIn, ctx: Ctx) -> PublishedPortOut:
    port = ctx.inventory.publish_port(
        body.container, body.host_port, body.container_port, body.protocol
    )
    return _port(ctx, port)


@router.get("/ports/{port_id}", summary="Show one published port")
def get_port(port_id: str, ctx: Ctx) -> PublishedPortOut:
    return _port(ctx, ctx.inventory.published_port(port_id))


@router.delete("/ports/{port_id}", summary="Unpublish a port")
def delete_port(port_id: str, ctx: Ctx) -> PublishedPortOut:
    return _port(ctx, ctx.inventory.unpublish_port(port_id))


# --- either, by id (what `daolictl firewall show|delete ID` uses) -----------------------
@router.get("/{item_id}", summary="Show a firewall rule or a published port by id")
def get_item(item_id: str, ctx: Ctx) -> FirewallRuleOut | PublishedPortOut:
    rule = ctx.inventory.index.rule(item_id)
    if rule is not None:
        return FirewallRuleOut.of(rule)
    port = ctx.inventory.index.published_port_by_id(item_id)
    if port is not None:
        return _port(ctx, port)
    raise NotFound(f"firewall rule or published port {item_id} not found")


@router.delete("/{item_id}", summary="Delete a firewall rule or a published port by id")
def delete_item(item_id: str, ctx: Ctx) -> FirewallRuleOut | PublishedPortOut:
    if ctx.inventory.index.rule(item_id) is not None:
        return FirewallRuleOut.of(ctx.inventory.delete_rule(item_id))
    if ctx.inventory.index.published_port_by_id(item_id) is not None:
        return _port(ctx, ctx.inventory.unpublish_port(item_id))
    raise NotFound(f"firewall rule or published port {item_id} not found")
