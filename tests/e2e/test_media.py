"""Media anchoring with a real rtpengine: SIPp customers play RTP from a pcap, the vendor's
media address is a socket the test reads, and rtpengine is asked (ng protocol) what it holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from routing_engine.adapters import media_failures, metric_sources
from routing_engine.adapters.rtpengine_ng import NgClient
from routing_engine.adapters.sipcheck import wait_until_answering
from routing_engine.settings import PROJECT_ROOT
from tests.e2e import provision
from tests.e2e.harness import (
    MediaSink,
    Node,
    Rtpengine,
    _stop_group,
    call_id_of,
    cdr,
    kamailio_node,
    rtpengine,
    scenario_expecting,
    sdp_media,
    sipp,
    vendor,
    wait_for,
)

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.100"
RELAY = "127.0.0.119"           # rtpengine: ng control and media
ALWAYS = "127.0.0.101"          # anchor always, carry on failure (the default failure behaviour)
NEVER = "127.0.0.102"           # anchor never
CODECS = "127.0.0.103"          # anchor always, PCMA and telephone-event only
NAT = "127.0.0.104"             # anchor when behind NAT
REFUSE = "127.0.0.105"          # anchor always, refuse when rtpengine cannot
FAILOVER = "127.0.0.107"        # anchor always; its plan tries a refusing vendor first
VENDOR = "127.0.0.110"
REFUSING_VENDOR = "127.0.0.111"
SINK_PORT = 7078                # the vendor's advertised RTP port
DIALED = "12125551234"
CALLER = "13055550100"


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    provision.reset(module_db)
    carrier = provision.vendor(module_db, "carrier", VENDOR, {"1": "0.0050"})
    plan = provision.plan(module_db, "media", [carrier])
    trunks = {}
    for ip, anchor, codecs, failure in ((ALWAYS, "always", [], "carry"), (NEVER, "never", [], "carry"),
                                        (CODECS, "always", ["PCMA", "telephone-event"], "carry"),
                                        (NAT, "nat", [], "carry"), (REFUSE, "always", [], "refuse")):
        _, trunk = provision.customer(module_db, f"BAN-{ip.rsplit('.', 1)[1]}", f"{ip}/32", plan)
        module_db.execute("UPDATE trunks.trunks SET media_anchor = %s, media_codecs = %s, media_failure = %s"
                          " WHERE id = %s", (anchor, codecs, failure, trunk))
        trunks[ip] = trunk
    refusing = provision.vendor(module_db, "refusing", REFUSING_VENDOR, {"1": "0.0010"})
    _, trunk = provision.customer(module_db, "BAN-107", f"{FAILOVER}/32",
                                  provision.plan(module_db, "failover", [refusing, carrier]))
    module_db.execute("UPDATE trunks.trunks SET media_anchor = 'always' WHERE id = %s", (trunk,))
    return trunks


@pytest.fixture(scope="module")
def relay(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    with rtpengine(e2e_env, RELAY, tmp_path_factory.mktemp("rtpengine")) as r:
        yield r


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], relay: Rtpengine, clean_redis: redis.Redis,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(relay.env, PROXY, tmp_path_factory.mktemp("node")) as n:
        yield n


@pytest.fixture
def sink() -> Iterator[MediaSink]:
    s = MediaSink(VENDOR, SINK_PORT)
    try:
        yield s
    finally:
        s.close()


def call(node: Node, customer: str, tmp_path: Path, scenario: str = "customer_media_call.xml",
         vendor_scenario: str = "vendor_media_answer.xml", contact_host: str | None = None,
         hold_ms: int = 1500) -> tuple[Any, Any]:
    """One customer call to the vendor; both SIPp ends must finish cleanly."""
    with vendor(vendor_scenario, VENDOR, tmp_path, keys={"sink_port": str(SINK_PORT)}) as gateway:
        keys = {"caller": CALLER}
        if scenario == "customer_media_call.xml":
            keys["contact_host"] = contact_host or customer
        uac = sipp(scenario, customer, tmp_path, remote=node.target, service=DIALED, keys=keys,
                   hold_ms=hold_ms, extra=["-mi", customer])
        assert uac.wait() == 0, uac.report()
        assert gateway.wait() == 0, gateway.report()
    return uac, gateway


def no_sessions_left(relay: Rtpengine) -> None:
    wait_for(lambda: relay.calls() == [], 5, "rtpengine's session list to be empty")


def test_anchored_call_carries_rtp_through_rtpengine_and_records_its_stats(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, sink: MediaSink, tmp_path: Path) -> None:
    uac, gateway = call(node, ALWAYS, tmp_path)
    address, port, _ = sdp_media(gateway.received("INVITE")[0])
    assert address == RELAY and 40000 <= port <= 40999   # the vendor is told to send to rtpengine
    assert sdp_media(uac.received("200")[0])[0] == RELAY  # and so is the customer
    wait_for(lambda: sink.packets >= 20, 5, "RTP at the vendor's media address")
    assert sink.source_ips() == {RELAY}                   # it came through rtpengine
    media = cdr(module_db, call_id_of(uac))["media"]
    assert media["anchored"] is True and media["reason"] == "trunk policy always"  # type: ignore[index]
    assert media["from_customer"] >= 20 and media["packets"] >= media["from_customer"]  # type: ignore[index]
    no_sessions_left(relay)


def test_never_anchored_trunk_keeps_end_to_end_sdp(node: Node, relay: Rtpengine, module_db: psycopg.Connection,
                                                   sink: MediaSink, tmp_path: Path) -> None:
    uac, gateway = call(node, NEVER, tmp_path)
    assert sdp_media(gateway.received("INVITE")[0])[:2] == (NEVER, 6000)
    assert sdp_media(uac.received("200")[0])[:2] == (VENDOR, SINK_PORT)
    wait_for(lambda: sink.packets >= 20, 5, "RTP at the vendor's media address")
    assert sink.source_ips() == {NEVER}
    media = cdr(module_db, call_id_of(uac))["media"]
    assert media == {"anchored": False, "reason": "trunk policy never"}


def test_codecs_the_trunk_may_not_use_are_stripped_from_the_vendors_sdp(
        node: Node, relay: Rtpengine, sink: MediaSink, tmp_path: Path) -> None:
    _, gateway = call(node, CODECS, tmp_path)
    invite = gateway.received("INVITE")[0]
    address, _, payloads = sdp_media(invite)
    assert address == RELAY and payloads == ["8", "101"]  # offered 0 8 18 101: PCMU and G729 gone
    assert "PCMU" not in invite and "G729" not in invite and "a=rtpmap:8 PCMA/8000" in invite
    no_sessions_left(relay)


def test_nat_trunk_is_anchored_only_when_its_contact_differs_from_its_source(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, sink: MediaSink, tmp_path: Path) -> None:
    uac, gateway = call(node, NAT, tmp_path)
    assert sdp_media(gateway.received("INVITE")[0])[0] == NAT
    assert cdr(module_db, call_id_of(uac))["media"]["reason"] == "trunk policy nat: not behind NAT"  # type: ignore[index]
    uac, gateway = call(node, NAT, tmp_path / "natted", contact_host="192.168.1.50")
    assert sdp_media(gateway.received("INVITE")[0])[0] == RELAY
    media = cdr(module_db, call_id_of(uac))["media"]
    assert media["anchored"] is True  # type: ignore[index]
    assert media["reason"] == f"trunk policy nat: Contact 192.168.1.50 differs from source {NAT}"  # type: ignore[index]
    no_sessions_left(relay)


def test_late_offer_is_anchored_from_the_200_and_the_ack(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, sink: MediaSink, tmp_path: Path) -> None:
    uac, gateway = call(node, ALWAYS, tmp_path, scenario="customer_late_offer.xml",
                        vendor_scenario="vendor_late_offer.xml")
    assert "application/sdp" not in gateway.received("INVITE")[0]
    assert sdp_media(uac.received("200")[0])[0] == RELAY  # the vendor's offer, rewritten
    assert sdp_media(gateway.received("ACK")[0])[0] == RELAY  # the customer's answer, rewritten
    wait_for(lambda: sink.packets >= 20, 5, "RTP at the vendor's media address")
    assert sink.source_ips() == {RELAY}
    media = cdr(module_db, call_id_of(uac))["media"]
    assert media["anchored"] is True and media["late_offer"] is True  # type: ignore[index]
    no_sessions_left(relay)


def test_failover_to_the_next_vendor_keeps_the_anchored_offer(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, sink: MediaSink, tmp_path: Path) -> None:
    with vendor("vendor_reject.xml", REFUSING_VENDOR, tmp_path) as refusing:
        uac, gateway = call(node, FAILOVER, tmp_path)
        assert refusing.wait() == 0, refusing.report()
    assert sdp_media(refusing.received("INVITE")[0])[0] == RELAY
    assert sdp_media(gateway.received("INVITE")[0])[0] == RELAY  # the second vendor gets the same offer
    wait_for(lambda: sink.packets >= 20, 5, "RTP at the second vendor")
    assert sink.source_ips() == {RELAY}
    row = cdr(module_db, call_id_of(uac))
    assert row["sip_code"] == 200 and row["media"]["from_customer"] >= 20  # type: ignore[index]
    no_sessions_left(relay)


def test_reinvite_keeps_the_media_anchored(node: Node, relay: Rtpengine, module_db: psycopg.Connection,
                                           tmp_path: Path) -> None:
    with vendor("vendor_answer_reinvite.xml", VENDOR, tmp_path) as gateway:
        uac = sipp("customer_reinvite.xml", ALWAYS, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, extra=["-mi", ALWAYS])
        assert uac.wait() == 0, uac.report()
        assert gateway.wait() == 0, gateway.report()
    invites = gateway.received("INVITE")
    assert len(invites) == 2 and all(sdp_media(i)[0] == RELAY for i in invites)
    assert sdp_media(invites[1])[2] == ["8"]  # the re-INVITE's own offer, rewritten by rtpengine
    answers = [m for m in uac.received("200") if "CSeq: 2 INVITE" in m]
    assert answers and sdp_media(answers[0])[0] == RELAY
    assert cdr(module_db, call_id_of(uac))["media"]["anchored"] is True  # type: ignore[index]
    no_sessions_left(relay)


def test_rtpengine_stopped_mid_call_never_hangs_the_call(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, clean_redis: redis.Redis,
        sink: MediaSink, tmp_path: Path) -> None:
    before = media_failures.counts(clean_redis)["delete"]
    try:
        with vendor("vendor_media_answer.xml", VENDOR, tmp_path, keys={"sink_port": str(SINK_PORT)}) as gateway:
            uac = sipp("customer_media_call.xml", ALWAYS, tmp_path, remote=node.target, service=DIALED,
                       keys={"caller": CALLER, "contact_host": ALWAYS}, hold_ms=3000, extra=["-mi", ALWAYS])
            wait_for(lambda: sink.packets >= 5, 10, "RTP flowing through rtpengine")
            relay.stop()
            assert uac.wait() == 0, uac.report()  # the BYE still goes through and is answered
            assert gateway.wait() == 0, gateway.report()
        media = cdr(module_db, call_id_of(uac))["media"]
        assert media["anchored"] is True and media["stats"] == "unavailable"  # type: ignore[index]
        assert media_failures.counts(clean_redis)["delete"] == before + 1
    finally:
        relay.start()
    assert relay.calls() == []  # a restarted rtpengine holds nothing of the old call


@pytest.mark.parametrize("customer, outcome, refused_scenario", [
    (ALWAYS, "carried", None),
    (REFUSE, "refused", "customer_media_refused.xml"),  # SDP in the INVITE: the offer fails
    (REFUSE, "refused", "late offer"),                  # no SDP: rtpengine is pinged instead
])
def test_rtpengine_down_gives_each_trunk_its_documented_behaviour(
        node: Node, relay: Rtpengine, module_db: psycopg.Connection, clean_redis: redis.Redis, sink: MediaSink,
        tmp_path: Path, customer: str, outcome: str, refused_scenario: str | None) -> None:
    before = media_failures.counts(clean_redis)
    relay.stop()
    try:
        if outcome == "carried":
            uac, gateway = call(node, customer, tmp_path)
            assert sdp_media(gateway.received("INVITE")[0])[0] == customer  # the endpoint's own SDP
            wait_for(lambda: sink.packets >= 20, 5, "RTP straight from the customer")
            assert sink.source_ips() == {customer}
            expected = {"anchored": False, "reason": "rtpengine unavailable: carried unanchored"}
        else:
            with vendor("vendor_media_answer.xml", VENDOR, tmp_path, keys={"sink_port": str(SINK_PORT)}) as gateway:
                scenario = refused_scenario if refused_scenario != "late offer" else scenario_expecting(503, tmp_path)
                uac = sipp(scenario, customer, tmp_path, remote=node.target, extra=["-mi", customer],
                           service=DIALED, keys={"caller": CALLER})
                assert uac.wait() == 0, uac.report()
                assert gateway.received("INVITE") == []  # no vendor was tried
            assert "503 Media relay unavailable" in uac.trace()
            expected = {"anchored": False, "reason": "rtpengine unavailable: refused"}
        row = cdr(module_db, call_id_of(uac))
        assert row["media"] == expected
        assert row["sip_code"] == (200 if outcome == "carried" else 503)
        after = media_failures.counts(clean_redis)
        assert after[outcome] == before[outcome] + 1 and after["offer"] == before["offer"] + 1
    finally:
        relay.start()
    # back in service: the next call is anchored again (the module retries after media.disable_s)
    wait_for(lambda: anchored_call(node, tmp_path / "again"), 15, "an anchored call after rtpengine's restart",
             interval_s=0.5)
    no_sessions_left(relay)


def test_metrics_read_rtpengine_statistics_and_the_media_failures(relay: Rtpengine, clean_redis: redis.Redis,
                                                                  node: Node) -> None:
    read = metric_sources.rtpengine_source(clean_redis, relay.settings.media.ng_address)
    families = {f.name: f for f in read()}
    stats = {(s.labels["group"], s.labels["stat"]): s.value for s in families["rtpengine_statistic"].samples}
    assert stats[("total", "managedsessions")] >= 1  # the calls of this module went through it
    assert ("current", "sessionsown") in stats
    failures = {s.labels["kind"]: s.value for s in families["warp_media_failures"].samples}
    assert failures == {k: float(v) for k, v in media_failures.counts(clean_redis).items()}
    assert failures["offer"] >= 1  # rtpengine was down for some calls above


def anchored_call(node: Node, tmp_path: Path) -> bool:
    tmp_path.mkdir(parents=True, exist_ok=True)
    _, gateway = call(node, ALWAYS, tmp_path / uuid.uuid4().hex, hold_ms=100)
    return sdp_media(gateway.received("INVITE")[0])[0] == RELAY


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]


def test_warp_run_starts_and_stops_its_own_rtpengine(e2e_env: dict[str, str], world: dict[str, uuid.UUID],
                                                      tmp_path: Path) -> None:
    address, ng = "127.0.0.106", "127.0.0.118:2223"
    env = {**e2e_env, "WARP_SIP__LISTEN": f"udp:{address}:5060", "WARP_SIP__CHILDREN": "1",
           "WARP_NODE__NAME": "media-run", "WARP_MEDIA__ENABLED": "true", "WARP_MEDIA__NG_ADDRESS": ng,
           "WARP_MEDIA__INTERFACE": "127.0.0.118", "WARP_MEDIA__PORT_MIN": "41000", "WARP_MEDIA__PORT_MAX": "41099"}
    client = NgClient(ng, timeout_s=0.3, retries=0)
    with open(tmp_path / "warp-run.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "routing_engine.entrypoints.cli", "run", "--no-demo"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT)
    try:
        assert wait_until_answering(address, 5060, 60, is_alive=lambda: proc.poll() is None), \
            (tmp_path / "warp-run.log").read_text()
        assert client.ping()
        assert "rtpengine started: ng control on 127.0.0.118:2223" in (tmp_path / "warp-run.log").read_text()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not client.ping()  # Ctrl-C stopped it with the rest
    finally:
        _stop_group(proc)
        client.close()
