"""Snapshot validation of who may claim an address: ACL entries of two accounts, ACL entries
over a vendor gateway, and destinations that are the node's own services."""

import ipaddress
import uuid
from dataclasses import replace

from routing_engine.domain.destinations import guard_for
from routing_engine.domain.validation import AclClaim, acl_conflict, overlapping_claims, problems

from .factories import World, gateway, rate

GUARD = guard_for(redis_url="redis://127.0.0.1:6379/0", database_url="postgresql://warp@127.0.0.1:5432/warp",
                  sip_listen=["udp:10.9.9.9:5060"], api_listen="127.0.0.1:8080")


def world() -> tuple[World, uuid.UUID]:
    w = World()
    plan = w.plan("p", [w.vendor("v", [rate("1", "0.01")], gateways=[gateway("192.0.2.50")])])
    return w, plan


def with_prefix(w: World, trunk_id: uuid.UUID, prefix: str | None) -> None:
    w.trunks[trunk_id] = replace(w.trunks[trunk_id], tech_prefix=prefix)


def test_the_same_address_in_two_accounts_acls_is_a_problem() -> None:
    w, plan = world()
    w.customer("198.51.100.7/32", plan, name="victim")
    w.customer("198.51.100.0/24", plan, name="taker")
    found = problems(w.snapshot())
    assert len(found) == 1
    assert "ACL 198.51.100.0/24 of trunk taker" in found[0] and "overlaps 198.51.100.7/32 of trunk victim" in found[0]
    assert "tech prefixes (none, none) do not tell the calls apart" in found[0]


def test_an_address_shared_by_accounts_whose_trunks_have_distinct_tech_prefixes_is_allowed() -> None:
    w, plan = world()
    one = w.customer("198.51.100.7/32", plan)
    two = w.customer("198.51.100.7/32", plan)
    with_prefix(w, one, "1111#")
    with_prefix(w, two, "2222#")
    assert problems(w.snapshot()) == []
    with_prefix(w, two, "1111#9")  # starts with the other's: a 1111#9... call could be either
    assert len(problems(w.snapshot())) == 1
    with_prefix(w, two, None)  # takes every call without a prefix, the other account's included
    assert len(problems(w.snapshot())) == 1


def test_entries_pinned_to_different_ports_or_transports_do_not_overlap() -> None:
    w, plan = world()
    w.customer("198.51.100.7/32", plan, port=5060)
    w.customer("198.51.100.7/32", plan, port=5070)
    w.customer("198.51.100.8/32", plan, transport="udp")
    w.customer("198.51.100.8/32", plan, transport="tcp")
    assert problems(w.snapshot()) == []


def test_one_accounts_trunks_may_overlap_each_other() -> None:
    w, plan = world()
    trunk = w.customer("198.51.100.7/32", plan)
    w.acl.append(replace(w.acl[-1], network=ipaddress.ip_network("198.51.100.0/24")))
    second = uuid.uuid4()
    w.trunks[second] = replace(w.trunks[trunk], id=second, name="trunk-2")
    w.acl.append(replace(w.acl[-1], trunk_id=second))
    assert problems(w.snapshot()) == []


def test_an_acl_entry_covering_a_vendor_gateway_is_a_problem() -> None:
    for cidr in ("192.0.2.32/27", "192.0.2.50/32"):
        w, plan = world()
        trunk = w.customer(cidr, plan, name="taker")
        assert problems(w.snapshot()) == [
            f"ACL {cidr} of trunk taker ({trunk}) covers the address of gateway gw1 of vendor v"]


def test_every_overlap_among_thousands_of_entries_is_found() -> None:
    def claim(cidr: str) -> AclClaim:
        return AclClaim(ipaddress.ip_network(cidr), None, None, uuid.uuid4(), cidr, uuid.uuid4(), None)

    claims = [claim(f"10.0.{i // 256}.{i % 256}/32") for i in range(5000)] + [claim("10.0.0.0/24")]
    pairs = list(overlapping_claims(claims))
    assert len(pairs) == 256 and all(acl_conflict(a, b) for a, b in pairs)


def test_a_destination_that_is_one_of_the_nodes_services_is_a_problem() -> None:
    w, plan = world()
    w.vendor("sneaky", [rate("1", "0.02")], gateways=[replace(gateway("127.0.0.1"), port=6379)])
    trunk = w.customer("198.51.100.7/32", plan)
    w.trunks[trunk] = replace(w.trunks[trunk], inbound_uri="sip:127.0.0.1:8080;transport=tcp")
    assert problems(w.snapshot()) == []  # without the node's guard nothing is known of its services
    found = problems(w.snapshot(), GUARD)
    assert "vendor sneaky: gateway gw1 (127.0.0.1:6379): 127.0.0.1:6379 is this node's Redis" in found
    assert any(p.startswith("trunk trunk-1") and "127.0.0.1:8080 is this node's admin API" in p for p in found)
    assert len(found) == 2


def test_a_destination_named_by_dns_is_left_to_the_check_before_sending() -> None:
    w, plan = world()
    w.vendor("named", [rate("1", "0.02")], gateways=[gateway("sip.vendor.example")])
    assert problems(w.snapshot(), GUARD) == []
