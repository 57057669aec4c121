"""Media policy: when a call is anchored, and the flags rtpengine gets for each side and step."""

from __future__ import annotations

import pytest

from routing_engine.adapters.rtpengine_ng import bdecode, bencode
from routing_engine.domain.media_plan import (
    Anchor,
    MediaPlan,
    MediaPolicy,
    OnFailure,
    Op,
    Side,
    behind_nat,
    call_stats,
    codec_problems,
    contact_hostport,
    ng_flags,
    plan_media,
    via_sent_by,
)

CARRIER = "replace-origin replace-session-connection ICE=remove RTP/AVP rtcp-mux-demux"
NATTED = "Contact 192.168.1.5 differs from source 203.0.113.9"


def test_a_trunk_without_a_media_policy_is_not_anchored() -> None:
    plan = plan_media(MediaPolicy(), None)
    assert (plan.anchor, plan.reason) == (False, "trunk policy never")


@pytest.mark.parametrize("anchor, nat, anchored, reason", [
    (Anchor.ALWAYS, None, True, "trunk policy always"),
    (Anchor.ALWAYS, NATTED, True, "trunk policy always"),
    (Anchor.NEVER, None, False, "trunk policy never"),
    (Anchor.NEVER, NATTED, False, "trunk policy never"),
    (Anchor.NAT, None, False, "trunk policy nat: not behind NAT"),
    (Anchor.NAT, NATTED, True, f"trunk policy nat: {NATTED}"),
])
def test_each_anchor_policy_decides_with_its_reason(anchor: Anchor, nat: str | None, anchored: bool,
                                                    reason: str) -> None:
    plan = plan_media(MediaPolicy(anchor), nat)
    assert (plan.anchor, plan.reason, plan.nat) == (anchored, reason, nat is not None)


def test_a_node_without_a_media_relay_anchors_nothing() -> None:
    plan = plan_media(MediaPolicy(Anchor.ALWAYS), None, enabled=False)
    assert (plan.anchor, plan.reason) == (False, "no media relay on this node")


def test_every_anchored_sdp_gets_the_carrier_flags() -> None:
    plan = plan_media(MediaPolicy(Anchor.ALWAYS), None)
    for side in Side:
        for op in Op:
            assert ng_flags(plan, side, op) == CARRIER


def test_allowed_codecs_strip_the_others_from_whichever_sdp_is_the_offer() -> None:
    plan = plan_media(MediaPolicy(Anchor.ALWAYS, ("PCMA", "telephone-event")), None)
    strip = " codec-strip-all codec-except-PCMA codec-except-telephone-event"
    assert ng_flags(plan, Side.CUSTOMER, Op.OFFER) == CARRIER + strip
    assert ng_flags(plan, Side.VENDOR, Op.OFFER) == CARRIER + strip  # late offer: the vendor's 200
    assert ng_flags(plan, Side.VENDOR, Op.ANSWER) == CARRIER
    assert ng_flags(plan, Side.CUSTOMER, Op.ANSWER) == CARRIER


def test_a_natted_customer_is_reached_at_its_sip_source_not_its_sdp() -> None:
    plan = plan_media(MediaPolicy(Anchor.NAT, ("PCMU",)), NATTED)
    assert ng_flags(plan, Side.CUSTOMER, Op.OFFER) == (CARRIER + " SIP-source-address codec-strip-all"
                                                       " codec-except-PCMU")
    assert ng_flags(plan, Side.CUSTOMER, Op.ANSWER) == CARRIER + " SIP-source-address"
    assert ng_flags(plan, Side.VENDOR, Op.ANSWER) == CARRIER  # the vendor side is not NATed


def test_the_failure_behaviour_travels_with_the_plan() -> None:
    plan = plan_media(MediaPolicy(Anchor.ALWAYS, ("G729",), OnFailure.REFUSE), None)
    assert MediaPlan.from_json(plan.to_json()) == plan
    assert plan.on_failure is OnFailure.REFUSE


@pytest.mark.parametrize("source, port, via, contact, natted", [
    ("203.0.113.9", 5060, "SIP/2.0/UDP 203.0.113.9:5060;branch=z9;rport", "<sip:a@203.0.113.9:5060>", None),
    ("203.0.113.9", 5060, "SIP/2.0/UDP 203.0.113.9;branch=z9", "<sip:a@203.0.113.9>", None),
    ("203.0.113.9", 5060, "SIP/2.0/UDP 192.168.1.5:5060;branch=z9", "<sip:a@203.0.113.9>",
     "Via 192.168.1.5 differs from source 203.0.113.9"),
    ("203.0.113.9", 40123, "SIP/2.0/UDP 203.0.113.9:5060;branch=z9", "",
     "Via port 5060 differs from source port 40123"),
    ("203.0.113.9", 5060, "SIP/2.0/UDP 203.0.113.9:5060", "<sip:a@192.168.1.5:5060;transport=udp>;expires=60",
     NATTED),
    ("2001:db8::1", 5060, "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9", "<sip:a@[2001:db8:0::1]:5060>", None),
])
def test_a_trunk_is_behind_nat_when_its_source_differs_from_via_or_contact(
        source: str, port: int, via: str, contact: str, natted: str | None) -> None:
    assert behind_nat(source, port, via, contact) == natted


def test_via_and_contact_addresses_are_read_from_their_header_values() -> None:
    assert via_sent_by("SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bK1;rport") == ("10.0.0.5", 5062)
    assert via_sent_by("garbage") is None
    assert contact_hostport('"Bob" <sips:bob@example.com;transport=tls>') == ("example.com", 5060)
    assert contact_hostport("*") is None


def test_codec_names_that_would_break_the_flag_list_are_reported() -> None:
    assert codec_problems(MediaPolicy(codecs=("PCMU", "AMR-WB", "telephone-event"))) == []
    assert codec_problems(MediaPolicy(codecs=("PCMA strip", "G729=1"))) == [
        "codec 'PCMA strip' is not an encoding name", "codec 'G729=1' is not an encoding name"]


def test_call_stats_count_packets_per_side_and_take_mos_when_rtpengine_has_it() -> None:
    leg = {"medias": [{"streams": [{"flags": ["RTP"], "stats": {"packets": 50}},
                                   {"flags": ["RTCP"], "stats": {"packets": 2}}]}]}
    response = {"totals": {"RTP": {"packets": 80, "bytes": 13760, "errors": 0}},
                "tags": {"caller": leg, "callee": {"medias": [{"streams": [{"stats": {"packets": 30}}]}]}},
                "SSRC": {"1": {"average MOS": {"MOS": 43, "packet loss": 1}},
                         "2": {"average MOS": {"MOS": 41, "packet loss": 3}}}}
    assert call_stats(response, "caller") == {"packets": 80, "bytes": 13760, "errors": 0, "from_customer": 50,
                                              "from_vendor": 30, "mos": 4.1, "loss_percent": 3}
    assert call_stats({"result": "ok"}, "caller") == {"packets": 0, "bytes": 0, "errors": 0,
                                                      "from_customer": 0, "from_vendor": 0}


def test_bencode_round_trips_what_the_ng_protocol_sends() -> None:
    message = {"command": "offer", "call-id": "a@b", "flags": ["trust-address"], "codec": {"strip": ["all"]},
               "port": 7078}
    encoded = bencode(message)
    assert encoded.startswith(b"d7:call-id3:a@b5:codecd5:stripl3:allee7:command5:offer")
    assert bdecode(encoded) == message
    with pytest.raises(ValueError):
        bdecode(b"d7:command")
