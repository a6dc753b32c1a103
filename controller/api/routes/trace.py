"""GET /api/v1/trace: the verdict for a connection, what decided it, and its path."""

from __future__ import annotations

import ipaddress
from typing import Literal

from fastapi import APIRouter, Query

from controller.api.auth import RequireToken
from controller.api.deps import Ctx
from controller.api.schemas import TraceEnd, TraceOut
from controller.desired.errors import Invalid, NotFound
from controller.desired.index import DesiredIndex
from controller.desired.models import Endpoint
from controller.desired.policy import PROTO_NUMBERS, Verdict, decide

router = APIRouter(tags=["trace"], dependencies=[RequireToken])


def _lookup(index: DesiredIndex, field: str, value: str) -> Endpoint | ipaddress.IPv4Address:
    """A container by name, id or IP; or, for `src`, any other IPv4 address (outside)."""
    endpoint = index.endpoint(value)
    if endpoint is not None:
        return endpoint
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise NotFound(f"{field}: container {value} not found") from None
    endpoint = index.endpoint_by_ip(address)
    if endpoint is not None:
        return endpoint
    if field == "dst":
        raise NotFound(f"dst: no container has address {address}")
    return address


def _end(endpoint: Endpoint | None, ip: ipaddress.IPv4Address) -> TraceEnd:
    if endpoint is None:
        return TraceEnd(name=None, ip=ip, network=None, host=None)
    return TraceEnd(name=endpoint.name, ip=endpoint.ip, network=endpoint.network,
                    host=endpoint.host)


def trace_path(index: DesiredIndex, src: Endpoint | None, dst: Endpoint) -> list[str]:
    """The hops an allowed connection takes (docs/architecture.md, "Datapath").

    Same host: straight to the container (one hop, TTL is not decremented).  Other
    host: the source host's kernel, the destination host, the container.  From
    outside daolinet: the destination host, the container.
    """
    dst_host = index.host(dst.host)
    if src is not None and src.host == dst.host:
        return [str(dst.ip)]
    hops: list[str] = []
    if src is not None:
        src_host = index.host(src.host)
        hops.append(str(src_host.address) if src_host is not None else src.host)
    hops.append(str(dst_host.address) if dst_host is not None else dst.host)
    hops.append(str(dst.ip))
    return hops


@router.get("/trace", summary="Would src reach dst? The verdict, its reason and the path")
def trace(
    ctx: Ctx,
    src: str = Query(
        min_length=1, max_length=128,
        description="Source container (name, id or IP), or an IPv4 address outside daolinet",
    ),
    dst: str = Query(
        min_length=1, max_length=128, description="Destination container (name, id or IP)"
    ),
    proto: Literal["tcp", "udp", "icmp"] = Query(default="tcp"),
    port: int | None = Query(
        default=None, ge=1, le=65535, description="Destination port (tcp and udp)"
    ),
) -> TraceOut:
    index = ctx.inventory.index
    if proto == "icmp" and port is not None:
        raise Invalid(f"query parameter port: icmp has no ports (got {port})")
    source = _lookup(index, "src", src)
    target = _lookup(index, "dst", dst)
    assert isinstance(target, Endpoint)
    src_ep = source if isinstance(source, Endpoint) else None
    src_ip = source.ip if isinstance(source, Endpoint) else source
    decision = decide(index, src_ip, target, PROTO_NUMBERS[proto], port, src_ep)
    allowed = decision.verdict is Verdict.ALLOW
    return TraceOut(
        verdict=decision.verdict.value,
        reason=decision.reason,
        kind=decision.kind,  # type: ignore[arg-type]
        rule_id=decision.rule_id,
        port_specific=decision.port_specific,
        src=_end(src_ep, src_ip),
        dst=_end(target, target.ip),
        proto=proto,
        port=port,
        path=trace_path(index, src_ep, target) if allowed else [],
    )
