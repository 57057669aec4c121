"""Explanation: the JSON document of a routing decision, as ``warp route explain --json`` prints
it and ``GET /api/v1/route/explain`` answers it — one function, so the two cannot drift apart.
Imports no web framework: the CLI can use it at no cost.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from routing_engine.decision import Decision, Relay
from routing_engine.snapshot import RoutingSnapshot


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
