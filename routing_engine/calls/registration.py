"""REGISTER from a customer trunk, once digest has proven which trunk it is.

The bindings live in Redis (visible to every node, so an inbound call reaches the trunk through
any of them); expiry is bounded, ``max_contacts`` enforced, an un-REGISTER removes, and the
address the REGISTER really came from (received/rport) is kept for delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from routing_engine.calls.ports import Node
from routing_engine.calls.sip import Reply
from routing_engine.domain import registrar
from routing_engine.domain.decision import CallRequest

log = logging.getLogger("warp.calls")


def register(node: Node, request: CallRequest, trunk_id: UUID, contacts_raw: Sequence[str], expires_raw: str,
             user_agent: str, now: datetime) -> Reply:
    """The answer to the REGISTER of ``trunk_id``: 200 with its bindings, or the refusal."""
    snapshot = node.snapshot()
    trunk = snapshot.trunks[trunk_id]
    account = snapshot.accounts.get(trunk.account_id)
    if account is None or account.status.value in ("suspended", "closed") or not trunk.enabled:
        return Reply(403, f"Account {account.status.value}" if account else "Forbidden")
    a = node.settings.auth
    expires_text = expires_raw.strip()
    try:
        contacts = registrar.parse_contacts(list(contacts_raw))
        wanted = registrar.plan(contacts, int(expires_text) if expires_text.isdigit() else None,
                                minimum=a.register_min_expires, maximum=a.register_max_expires,
                                default=a.register_default_expires)
    except registrar.RegisterError as exc:
        headers = (f"Min-Expires: {exc.min_expires}",) if exc.min_expires is not None else ()
        return Reply(exc.code, exc.reason, headers)
    received = f"sip:{uri_host(request.source_ip)}:{request.source_port};transport={request.transport}"
    try:
        if contacts == []:
            bindings = node.registrations.bindings(trunk_id, now.timestamp())
        else:
            bindings = node.registrations.apply(trunk_id, wanted, now.timestamp(), received,
                                                trunk.max_contacts, request.call_id, user_agent)
    except Exception as exc:
        log.error("REGISTER of trunk %s not stored: %s", trunk.name, exc)
        return Reply(503, "Service Unavailable", ("Retry-After: 30",))
    log.info("trunk %s registered from %s: %d contact(s)", trunk.name, received, len(bindings))
    return Reply(200, "OK", tuple(f"Contact: <{b.uri}>;expires={b.expires_in}" for b in bindings))


def uri_host(ip: str) -> str:
    """An address as a SIP URI host (IPv6 in brackets)."""
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
