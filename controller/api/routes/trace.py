"""GET /api/v1/trace: the verdict for a connection, what decided it, and its path."""

from __future__ import annotations

import ipaddress
from typing import Literal

from fastapi import APIRouter, Query

from controller.api.auth import RequireToken
from controller.api.deps import Ctx
from controller.api.schemas import AuditOut, TraceEnd, TraceHop, TraceOut
from controller.datapath import paths
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


def trace_path(
    index: DesiredIndex, src: Endpoint | None, dst: Endpoint
) -> tuple[str | None, list[TraceHop]]:
    """The kind and hops of the path an allowed connection takes, from the derivation
    the core routes by (controller.datapath.paths; docs/architecture.md, "Sites").

    Same host: straight to the container.  Same site: the source host's underlay
    address, the destination host's, the container.  Across sites: the hosts' tunnel
    addresses (and the relay's between two hosts behind NAT), the container.  From
    outside daolinet: the destination host, the container.
    """
    dst_host = index.host(dst.host)
    src_host = index.host(src.host) if src is not None else None
    if dst_host is None or (src is not None and src_host is None):
        return None, []  # a host not registered (endpoints are added on registered hosts)
    kind, hops = paths.trace_hops(src_host, dst_host, dst.ip, index.hosts)
    return kind, [TraceHop(address=h.address, host=h.host, kind=h.kind) for h in hops]


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
    path_kind, hops = (
        trace_path(index, src_ep, target) if decision.verdict is Verdict.ALLOW else (None, [])
    )
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
        path=[str(hop.address) for hop in hops],
        path_kind=path_kind,
        hops=hops,
        audit=[AuditOut(kind=a.kind, id=a.id, would=a.would, reason=a.reason)  # type: ignore[arg-type]
               for a in decision.audit],
    )
