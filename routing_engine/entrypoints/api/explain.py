"""Route explain: what the engine would do with a call, and why — the same ``decide_invite``
the SIP workers run, on the same snapshot data and gateway health, answering with the JSON of
``warp route explain --json`` (explanation.py builds that document).

Staff only: the answer shows vendors, their costs and gateways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from routing_engine.domain.decision import CallRequest
from routing_engine.entrypoints.api.envelope import Envelope, error_responses, invalid, ok
from routing_engine.entrypoints.api.explanation import address_owner, explanation, trunk_label
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import READ, Caller
from routing_engine.entrypoints.api.services import Services, services

router = APIRouter(prefix="/route", tags=["route explain"], route_class=PolicyRoute)

Digits = Annotated[str, Query(min_length=1, max_length=40, pattern=r"^[0-9+*#]+$")]


@router.get("/explain", response_model=Envelope[dict[str, Any]], responses=error_responses(401, 403, 422, 503))
def explain(to: Digits,
            caller: Annotated[str | None, Query(alias="from", max_length=40, pattern=r"^[0-9+*#]*$")] = None,
            source: Annotated[str | None, Query(max_length=45, pattern=r"^[0-9A-Fa-f.:]+$",
                                                description="source IP of the calling switch")] = None,
            trunk: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f]+$",
                                               description="or the trunk: id, name or BAN/name")] = None,
            call_id: Annotated[str, Query(max_length=100, pattern=r"^[^\x00-\x1f]+$")] = "explain",
            port: Annotated[int, Query(ge=1, le=65535)] = 5060,
            transport: Annotated[str, Query(pattern="^(udp|tcp|tls)$")] = "udp",
            at: Annotated[datetime | None,
                          Query(description="ISO time of the call (default: now; UTC if no zone)")] = None,
            who: Caller = Depends(READ), svc: Services = Depends(services)) -> Any:
    """Explains how a call would be routed: trunk, account, numbers, plan, LRN, jurisdiction,
    every vendor kept or dropped and why, and the routes in order. Given a source, ``address``
    says which trunk that address maps to and why (every matching ACL entry, the rule that chose)."""
    moment = at or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    snapshot = svc.snapshots.get()
    trunk_id = None
    if trunk:
        matches = [t for t in snapshot.trunks.values()
                   if trunk in (str(t.id), t.name) or trunk == trunk_label(snapshot, t)]
        if len(matches) != 1:
            raise invalid("query.trunk", f"matches {len(matches)} trunks; use its id or BAN/name")
        trunk_id = matches[0].id
    elif not source:
        raise invalid("query.source", "give source (an IP address) or trunk")
    request = CallRequest(call_id=call_id, source_ip=source or "", source_port=port, transport=transport,
                          dialed=to, caller=caller or "")
    decision = svc.decider()(request, snapshot, moment, trunk_id=trunk_id)
    address = address_owner(snapshot, source, port, transport, to) if source and not trunk else None
    return ok(who.request_id, explanation(decision, moment, address))
