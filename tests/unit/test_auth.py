from uuid import UUID

from routing_engine.domain.auth import identify
from routing_engine.domain.snapshot import RoutingSnapshot

from .factories import World


def identify_by_acl(s: RoutingSnapshot, ip: str, port: int, transport: str) -> UUID | None:
    found = identify(s, ip, port, transport, "12125551234")
    return found.trunk_id if found else None


def test_source_inside_a_trunk_cidr_identifies_that_trunk() -> None:
    w = World()
    trunk = w.customer("10.1.0.0/16", None)
    s = w.snapshot()
    assert identify_by_acl(s, "10.1.2.3", 5060, "udp") == trunk


def test_unknown_source_identifies_no_trunk() -> None:
    w = World()
    w.customer("10.1.0.0/16", None)
    s = w.snapshot()
    assert identify_by_acl(s, "10.2.0.1", 5060, "udp") is None


def test_most_specific_entry_wins_when_trunks_overlap() -> None:
    w = World()
    wide = w.customer("10.0.0.0/8", None)
    narrow = w.customer("10.1.2.3/32", None)
    s = w.snapshot()
    assert identify_by_acl(s, "10.1.2.3", 5060, "udp") == narrow
    assert identify_by_acl(s, "10.1.2.4", 5060, "udp") == wide


def test_entry_pinned_to_port_and_transport_matches_only_those() -> None:
    w = World()
    any_port = w.customer("10.1.2.3/32", None)
    pinned = w.customer("10.1.2.3/32", None, port=5080, transport="tcp")
    s = w.snapshot()
    assert identify_by_acl(s, "10.1.2.3", 5080, "tcp") == pinned
    assert identify_by_acl(s, "10.1.2.3", 5080, "udp") == any_port
    assert identify_by_acl(s, "10.1.2.3", 5060, "tcp") == any_port


def test_ipv6_and_ipv4_mapped_sources_are_matched() -> None:
    w = World()
    v6 = w.customer("2001:db8::/32", None)
    v4 = w.customer("192.0.2.0/24", None)
    s = w.snapshot()
    assert identify_by_acl(s, "2001:db8::5", 5060, "udp") == v6
    assert identify_by_acl(s, "::ffff:192.0.2.9", 5060, "udp") == v4


def test_garbage_source_address_identifies_no_trunk() -> None:
    w = World()
    w.customer("0.0.0.0/0", None)
    s = w.snapshot()
    assert identify_by_acl(s, "not-an-ip", 5060, "udp") is None


def test_a_call_may_be_spoken_for_by_its_trunks_addresses_and_its_vendors_gateways_only() -> None:
    from routing_engine.domain.auth import speaks_for
    from tests.unit.factories import World, gateway, rate

    w = World()
    carrier = w.vendor("carrier", [rate("1", "0.01")], gateways=[gateway("192.0.2.10"), gateway("192.0.2.11", "gw2")])
    other = w.vendor("other", [rate("1", "0.01")], gateways=[gateway("192.0.2.20")])
    trunk = w.customer("10.1.0.0/29", w.plan("p", [carrier, other]))
    stranger = w.customer("10.9.0.1/32", w.plan("q", [other]))
    snap = w.snapshot()
    assert speaks_for(snap, "10.1.0.5", trunk, [carrier])          # another node of the customer's SBC cluster
    assert speaks_for(snap, "192.0.2.11", trunk, [carrier])        # another gateway of the answering vendor
    assert not speaks_for(snap, "192.0.2.20", trunk, [carrier])    # a gateway of a vendor not in the call
    assert not speaks_for(snap, "10.9.0.1", trunk, [carrier])      # another customer
    assert not speaks_for(snap, "10.9.0.1", None, [])
    assert speaks_for(snap, "10.9.0.1", stranger, [])
    assert not speaks_for(snap, "not-an-ip", trunk, [carrier])
