import uuid
from dataclasses import replace

from routing_engine.domain import auth
from routing_engine.domain.decision import Reject
from routing_engine.domain.inbound import Contact, Deliver, decide_inbound
from routing_engine.domain.snapshot import AccountStatus, Credential, GatewayRef

from .factories import World, gateway, rate


def shared_ip_world() -> tuple[World, dict[str, uuid.UUID]]:
    w = World()
    a = w.customer("10.0.0.5/32", None, name="a")
    b = w.customer("10.0.0.5/32", None, name="b")
    plain = w.customer("10.0.0.5/32", None, name="plain")
    w.trunks[a] = replace(w.trunks[a], tech_prefix="1111#")
    w.trunks[b] = replace(w.trunks[b], tech_prefix="22#")
    return w, {"a": a, "b": b, "plain": plain}


def test_tech_prefix_picks_the_trunk_behind_a_shared_ip_and_is_removed() -> None:
    w, ids = shared_ip_world()
    s = w.snapshot()
    found = auth.identify(s, "10.0.0.5", 5060, "udp", "22#12125551234")
    assert found is not None and (found.trunk_id, found.dialed, found.tech_prefix) == (
        ids["b"], "12125551234", "22#")
    plain = auth.identify(s, "10.0.0.5", 5060, "udp", "12125551234")
    assert plain is not None and plain.trunk_id == ids["plain"]


def test_shared_ip_without_a_matching_prefix_or_plain_trunk_is_unknown() -> None:
    w, ids = shared_ip_world()
    del w.trunks[ids["plain"]]
    w.acl = [e for e in w.acl if e.trunk_id != ids["plain"]]
    assert auth.identify(w.snapshot(), "10.0.0.5", 5060, "udp", "12125551234") is None


def test_digest_only_trunk_is_not_identified_by_its_address() -> None:
    w = World()
    t = w.customer("10.0.0.7/32", None)
    w.trunks[t] = replace(w.trunks[t], auth_mode="digest")
    assert auth.identify(w.snapshot(), "10.0.0.7", 5060, "udp", "1212") is None


def test_credentials_count_only_for_trunks_that_accept_digest() -> None:
    w = World()
    acl_only = w.customer("10.0.0.8/32", None, name="acl")
    hybrid = w.customer("10.0.0.9/32", None, name="hybrid")
    w.trunks[hybrid] = replace(w.trunks[hybrid], auth_mode="both")
    s = replace(w.snapshot(), credentials={"x": Credential(acl_only, "x", "0" * 32),
                                           "y": Credential(hybrid, "y", "1" * 32)})
    assert auth.credential(s, "x") is None and auth.credential(s, "y") is not None
    assert auth.credential(s, "nobody") is None


def inbound_world(static: str | None = None, status: AccountStatus = AccountStatus.ACTIVE):
    w = World()
    v = w.vendor("carrier", [rate("1", "0.01")], gateways=[gateway("192.0.2.50")])
    t = w.customer("10.0.0.1/32", None, status=status)
    w.trunks[t] = replace(w.trunks[t], inbound_uri=static)
    s = replace(w.snapshot(), dids={"12125559000": t})
    return s, GatewayRef(v, s.vendors[v].gateways[0]), t


def test_vendor_gateway_addresses_are_indexed_for_inbound_calls() -> None:
    s, ref, _ = inbound_world()
    assert s.gateway_hosts["192.0.2.50"] == ref


def test_did_is_delivered_to_every_registered_contact() -> None:
    s, ref, t = inbound_world()
    contacts = [Contact("sip:u@10.1.1.1:5060", "sip:203.0.113.9:40000;transport=udp"), Contact("sip:u@10.1.1.2")]
    d = decide_inbound("12125559000", "13055550100", ref, s, lambda trunk: contacts if trunk == t else [])
    assert isinstance(d, Deliver) and [(x.ruri, x.dst) for x in d.targets] == [
        ("sip:u@10.1.1.1:5060", "sip:203.0.113.9:40000;transport=udp"), ("sip:u@10.1.1.2", None)]
    assert d.context.trunk_id == t and d.context.to_e164 == "+12125559000"


def test_static_trunk_gets_the_did_in_the_request_uri() -> None:
    s, ref, _ = inbound_world(static="sip:198.51.100.20:5080")
    d = decide_inbound("+1 212 555 9000", "", ref, s, lambda trunk: [])
    assert isinstance(d, Deliver) and d.targets[0].ruri == "sip:12125559000@198.51.100.20:5080"


def test_unknown_did_is_404_and_offline_trunk_is_480() -> None:
    s, ref, _ = inbound_world()
    unknown = decide_inbound("12125550000", "", ref, s, lambda trunk: [])
    offline = decide_inbound("12125559000", "", ref, s, lambda trunk: [])
    assert isinstance(unknown, Reject) and unknown.code == 404
    assert isinstance(offline, Reject) and (offline.code, offline.reason) == (480, "Temporarily Unavailable")


def test_inbound_to_a_suspended_account_is_refused() -> None:
    s, ref, _ = inbound_world(static="sip:198.51.100.20", status=AccountStatus.SUSPENDED)
    d = decide_inbound("12125559000", "", ref, s, lambda trunk: [])
    assert isinstance(d, Reject) and d.code == 403


