"""REGISTER from a customer trunk, once digest has proven which trunk it is.

The bindings live in Redis (visible to every node, so an inbound call reaches the trunk through
any of them); expiry is bounded, ``max_contacts`` enforced, an un-REGISTER removes, and the
address the REGISTER really came from (received/rport) is kept for delivery.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

import KSR  # provided by app_python3

from kemi.pv import pv
from routing_engine.domain import registrar
from routing_engine.domain.decision import CallRequest

log = logging.getLogger("warp.kemi")


def register(app: Any, request: CallRequest, trunk_id: UUID, now: datetime) -> None:
    """Answer the REGISTER of ``trunk_id``: 200 with its bindings, or the refusal."""
    snapshot = app.snapshot()
    trunk = snapshot.trunks[trunk_id]
    account = snapshot.accounts.get(trunk.account_id)
    if account is None or account.status.value in ("suspended", "closed") or not trunk.enabled:
        KSR.sl.sl_send_reply(403, f"Account {account.status.value}" if account else "Forbidden")
        return
    a = app.settings.auth
    values = [pv(f"$(hdr(Contact)[{i}])") for i in range(int(pv("$hdrc(Contact)") or 0))]
    expires_text = pv("$hdr(Expires)").strip()
    try:
        contacts = registrar.parse_contacts(values)
        wanted = registrar.plan(contacts, int(expires_text) if expires_text.isdigit() else None,
                                minimum=a.register_min_expires, maximum=a.register_max_expires,
                                default=a.register_default_expires)
    except registrar.RegisterError as exc:
        if exc.min_expires is not None:
            KSR.hdr.append_to_reply(f"Min-Expires: {exc.min_expires}\r\n")
        KSR.sl.sl_send_reply(exc.code, exc.reason)
        return
    received = f"sip:{uri_host(request.source_ip)}:{request.source_port};transport={request.transport}"
    try:
        if contacts == []:
            bindings = app.registrations.bindings(trunk_id, now.timestamp())
        else:
            bindings = app.registrations.apply(trunk_id, wanted, now.timestamp(), received,
                                               trunk.max_contacts, request.call_id, pv("$ua"))
    except Exception as exc:
        log.error("REGISTER of trunk %s not stored: %s", trunk.name, exc)
        KSR.hdr.append_to_reply("Retry-After: 30\r\n")
        KSR.sl.sl_send_reply(503, "Service Unavailable")
        return
    for b in bindings:
        KSR.hdr.append_to_reply(f"Contact: <{b.uri}>;expires={b.expires_in}\r\n")
    KSR.sl.sl_send_reply(200, "OK")
    log.info("trunk %s registered from %s: %d contact(s)", trunk.name, received, len(bindings))


def uri_host(ip: str) -> str:
    """An address as a SIP URI host (IPv6 in brackets)."""
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
