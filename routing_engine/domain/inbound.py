"""Inbound (origination): a vendor delivers a call to one of our DIDs; find the customer trunk.

A call is inbound when its source address is one of our vendors' gateways. The dialed number
must be a DID assigned to a trunk (else 404); the trunk's account must be active (else 403).
The call goes to the trunk's static ``inbound_uri`` if it has one, else to all its registered
contacts at once (parallel forking: the first to answer takes the call); a trunk with neither
is offline: 480 Temporarily Unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routing_engine.domain.decision import CallContext, Reject
from routing_engine.domain.numbers import NumberError, normalise
from routing_engine.domain.snapshot import AccountStatus, GatewayRef, RoutingSnapshot


@dataclass(frozen=True, slots=True)
class Contact:
    """A registered contact: the URI it registered, and where its REGISTER came from (NAT)."""

    uri: str
    received: str | None = None  # e.g. sip:203.0.113.7:41234;transport=udp


@dataclass(frozen=True, slots=True)
class Target:
    ruri: str
    dst: str | None = None  # send here instead of resolving the Request-URI (NAT)


@dataclass(frozen=True, slots=True)
class Deliver:
    targets: tuple[Target, ...]
    context: CallContext
    trace: dict[str, object]


ContactsLookup = Callable[[object], Sequence[Contact]]


def decide_inbound(dialed_raw: str, caller_raw: str, source: GatewayRef, snapshot: RoutingSnapshot,
                   contacts_of: ContactsLookup, default_region: str = "US") -> Deliver | Reject:
    vendor = snapshot.vendors.get(source.vendor_id)
    trace: dict[str, object] = {"snapshot": snapshot.version, "direction": "inbound",
                                "vendor": vendor.name if vendor else str(source.vendor_id),
                                "gateway": source.gateway.name}
    try:
        dialed = normalise(dialed_raw, default_region)
    except NumberError as exc:
        trace["number"] = str(exc)
        return Reject(404, "Not Found", trace=trace, q850_cause=1)
    try:
        caller = str(normalise(caller_raw, default_region))
    except NumberError:
        caller = None
    trunk_id = snapshot.dids.get(dialed.digits)
    trunk = snapshot.trunks.get(trunk_id) if trunk_id else None
    if trunk is None:
        trace["did"] = f"{dialed} is not an assigned DID"
        return Reject(404, "Not Found", CallContext(to_e164=str(dialed), from_e164=caller), trace,
                      q850_cause=1)
    context = CallContext(account_id=trunk.account_id, trunk_id=trunk.id, from_e164=caller,
                          to_e164=str(dialed))
    account = snapshot.accounts.get(trunk.account_id)
    trace["did"] = {"number": str(dialed), "trunk": trunk.name}
    if account is None or account.status in (AccountStatus.SUSPENDED, AccountStatus.CLOSED) or not trunk.enabled:
        status = "disabled" if not trunk.enabled else (account.status.value if account else "missing")
        return Reject(403, f"Account {status}" if trunk.enabled else "Trunk disabled", context, trace)
    if trunk.inbound_uri:
        scheme, _, hostpart = trunk.inbound_uri.partition(":")
        targets: tuple[Target, ...] = (Target(f"{scheme}:{dialed.digits}@{hostpart}"),)
        trace["delivery"] = {"static": trunk.inbound_uri}
    else:
        contacts = list(contacts_of(trunk.id))
        if not contacts:
            trace["delivery"] = "no registered contact"
            return Reject(480, "Temporarily Unavailable", context, trace)
        targets = tuple(Target(c.uri, c.received) for c in contacts)
        trace["delivery"] = {"registered": [c.uri for c in contacts]}
    return Deliver(targets, context, trace)
