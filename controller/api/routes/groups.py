"""/api/v1/groups: groups of networks that reach each other, and their members."""

from __future__ import annotations

from fastapi import APIRouter, status

from controller.api.auth import RequireAdmin
from controller.api.deps import Ctx
from controller.api.schemas import GroupIn, GroupMemberIn, GroupOut

router = APIRouter(prefix="/groups", tags=["groups"], dependencies=[RequireAdmin])


@router.get("", summary="List groups")
def list_groups(ctx: Ctx) -> list[GroupOut]:
    return [GroupOut.of(g) for g in ctx.inventory.groups()]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a group")
def create_group(body: GroupIn, ctx: Ctx) -> GroupOut:
    return GroupOut.of(ctx.inventory.create_group(body.name, body.networks))


@router.get("/{name}", summary="Show one group")
def get_group(name: str, ctx: Ctx) -> GroupOut:
    return GroupOut.of(ctx.inventory.group(name))


@router.delete("/{name}", summary="Delete a group (and the firewall rules on it)")
def delete_group(name: str, ctx: Ctx) -> GroupOut:
    return GroupOut.of(ctx.inventory.delete_group(name))


@router.get("/{name}/members", summary="The member networks of a group")
def list_members(name: str, ctx: Ctx) -> list[str]:
    return list(ctx.inventory.group(name).networks)


@router.post("/{name}/members", summary="Add a network to a group")
def add_member(name: str, body: GroupMemberIn, ctx: Ctx) -> GroupOut:
    return GroupOut.of(ctx.inventory.add_group_member(name, body.network))


@router.delete("/{name}/members/{network}", summary="Remove a network from a group")
def remove_member(name: str, network: str, ctx: Ctx) -> GroupOut:
    return GroupOut.of(ctx.inventory.remove_group_member(name, network))
