"""Route explain: what the engine would do with a call, and why — the same ``decide_invite``
the SIP workers run, on the same snapshot data, answering with the JSON of
``warp route explain --json`` (``explanation()`` builds that document for both).

Staff only: the answer shows vendors, their costs and gateways.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from routing_engine.api.envelope import Envelope, error_responses, invalid, ok
from routing_engine.api.openapi import PolicyRoute
from routing_engine.api.principals import READ, Caller
from routing_engine.api.services import Services, services
from routing_engine.bootstrap import lrn_lookup
from routing_engine.decision import CallRequest, Decision, Relay, decide_invite
from routing_engine.snapshot import RoutingSnapshot

router = APIRouter(prefix="/route", tags=["route explain"], route_class=PolicyRoute)

Digits = Annotated[str, Query(min_length=1, max_length=40, pattern=r"^[0-9+*#]+$")]


def explanation(decision: Decision, at: datetime) -> dict[str, Any]:
    """The document ``warp route explain --json`` prints, as plain JSON values."""
    if isinstance(decision, Relay):
        result: dict[str, object] = {
            "decision": "relay",
            "routes": [{"vendor": r.vendor_name, "gateway": r.gateway.name, "ruri": r.ruri,
                        "from": r.from_user, "rate": str(r.rate), "prefix": r.prefix}
                       for r in decision.routes[: decision.policy.max_attempts]],
            "failover": decision.policy.to_json(),
        }
    else:
        result = {"decision": "reject", "code": decision.code, "reason": decision.reason}
    result["at"] = at.isoformat()
    result["trace"] = decision.trace
    plain: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return plain


def trunk_label(snapshot: RoutingSnapshot, trunk: Any) -> str:
    account = snapshot.accounts.get(trunk.account_id)
    return f"{account.ban}/{trunk.name}" if account else str(trunk.name)


@router.get("/explain", response_model=Envelope[dict[str, Any]], responses=error_responses(401, 403, 422, 503))
def explain(to: Digits, caller: Annotated[str | None, Query(alias="from", max_length=40, pattern=r"^[0-9+*#]*$")] = None,
            source: Annotated[str | None, Query(max_length=45, pattern=r"^[0-9A-Fa-f.:]+$",
                                                description="source IP of the calling switch")] = None,
            trunk: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f]+$",
                                               description="or the trunk: id, name or BAN/name")] = None,
            call_id: Annotated[str, Query(max_length=100, pattern=r"^[^\x00-\x1f]+$")] = "explain",
            port: Annotated[int, Query(ge=1, le=65535)] = 5060,
            transport: Annotated[str, Query(pattern="^(udp|tcp|tls)$")] = "udp",
            at: Annotated[datetime | None, Query(description="ISO time of the call (default: now; UTC if no zone)")] = None,
            who: Caller = Depends(READ), svc: Services = Depends(services)) -> Any:
    """Explains how a call would be routed: trunk, account, numbers, plan, LRN, jurisdiction,
    every vendor kept or dropped and why, and the routes in order."""
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
    settings = svc.settings
    request = CallRequest(call_id=call_id, source_ip=source or "", source_port=port, transport=transport,
                          dialed=to, caller=caller or "")
    decision = decide_invite(request, snapshot, moment, settings.routing.default_region,
                             lrn_lookup(settings, svc.redis()), trunk_id=trunk_id)
    return ok(who.request_id, explanation(decision, moment))
