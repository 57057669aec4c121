"""The node's own services are never a SIP destination (routing_engine/domain/destinations.py)."""

from __future__ import annotations

import pytest

from routing_engine.domain import destinations
from routing_engine.settings import load_settings


def guard() -> destinations.Guard:
    return destinations.guard_for(
        redis_url="redis://:secret@127.0.0.1:56379/0", database_url="postgresql://warp:pw@127.0.0.1:55432/warp",
        sip_listen=["udp:127.0.0.190:5060", "tcp:127.0.0.190:5060"], ng_address="127.0.0.1:22222",
        api_listen="0.0.0.0:8080", metrics_listen="127.0.0.1:9464", forbidden=["10.0.0.0/8", "192.0.2.7/32:6379"])


@pytest.mark.parametrize(("ip", "port", "why"), [
    ("127.0.0.1", 56379, "Redis"), ("127.0.0.1", 55432, "Postgres"), ("127.0.0.1", 22222, "rtpengine"),
    ("127.0.0.1", 9464, "metrics"), ("127.0.0.190", 5060, "SIP socket"),
    # the API listens on every address: every local address reaches it
    ("127.0.0.1", 8080, "admin API"), ("127.0.0.77", 8080, "admin API"), ("127.0.0.190", 8080, "admin API"),
    ("::ffff:127.0.0.1", 56379, "Redis"), ("[127.0.0.1]", 56379, "Redis"),
    ("169.254.169.254", 80, "no SIP peer"), ("0.0.0.0", 5060, "no SIP peer"), ("224.0.0.1", 5060, "no SIP peer"),
    ("255.255.255.255", 5060, "no SIP peer"), ("10.1.2.3", 5060, "forbidden_destinations"),
    ("192.0.2.7", 6379, "forbidden_destinations"), ("not-an-ip", 5060, "not an IP"),
])
def test_a_node_service_or_no_peer_address_is_refused(ip: str, port: int, why: str) -> None:
    refusal = guard().refusal(ip, port)
    assert refusal is not None and why in refusal


@pytest.mark.parametrize(("ip", "port"), [
    ("127.0.0.1", 5060), ("127.0.0.195", 5060), ("127.0.0.190", 5070), ("192.0.2.7", 5060), ("203.0.113.9", 56379),
])
def test_a_peer_address_is_allowed(ip: str, port: int) -> None:
    assert guard().refusal(ip, port) is None


@pytest.mark.parametrize(("uri", "target"), [
    ("sip:12125551234@127.0.0.1:56379;transport=tcp", ("127.0.0.1", 56379)),
    ("sip:127.0.0.1", ("127.0.0.1", 5060)), ("sips:a@host.example", ("host.example", 5061)),
    ("sip:a@[::1]:5070;lr", ("::1", 5070)), ("<sip:a@10.0.0.1;transport=TLS>", ("10.0.0.1", 5061)),
    ("sip:a@10.0.0.1:99999", ("10.0.0.1", 5060)),
    ("sip:7788#2125551234;rn=3055559999;npdi@127.0.0.9:5060", ("127.0.0.9", 5060)),
    ("sip:127.0.0.9;transport=tls", ("127.0.0.9", 5061)), ("sip:u@h.example?Subject=x", ("h.example", 5060)),
])
def test_uri_target_reads_host_and_port_as_kamailio_sends(uri: str, target: tuple[str, int]) -> None:
    assert destinations.uri_target(uri) == target


def test_the_settings_guard_covers_every_service_the_node_runs() -> None:
    settings = load_settings(environ={"WARP_SIP__LISTEN": "udp:127.0.0.190:5060",
                                      "WARP_SIP__FORBIDDEN_DESTINATIONS": "198.51.100.0/24"})
    g = destinations.from_settings(settings)
    assert {s.name for s in g.services} >= {"Redis", "Postgres", "rtpengine ng control", "admin API",
                                            "metrics endpoint", "SIP socket"}
    assert g.refusal("198.51.100.4", 5060) is not None
    assert g.refusal("127.0.0.1", settings.stack.redis_port) is not None
