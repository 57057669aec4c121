"""Media policy: whether a call's media is anchored in rtpengine, and the flags rtpengine gets.

Pure: a trunk's policy and what the INVITE shows about its sender go in; a ``MediaPlan`` (a
value that travels with the dialog) and ng flag strings come out. routing_engine/calls/media.py hands the flags
to Kamailio's rtpengine module; the statistics rtpengine returns at the end of a call are read
back here into the CDR's ``media`` field.

Defaults (a trunk row says nothing else): ``never`` anchor, every codec allowed, ``carry`` on
failure. Every anchored SDP, whichever side it comes from, gets the flags a carrier trunk
expects (``CARRIER_FLAGS``): our address in o= and c=, ICE removed, plain RTP/AVP, rtcp-mux
split into separate RTP/RTCP ports for peers that do not offer it. RTP is symmetric: that is
rtpengine's own default (it learns each peer's address from its first packet; 10.5 rejects a
"symmetric" flag as unknown, and "asymmetric" is never passed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Anchor(StrEnum):
    ALWAYS = "always"
    NEVER = "never"
    NAT = "nat"  # only when the trunk is behind NAT


class OnFailure(StrEnum):
    CARRY = "carry"    # rtpengine unusable: the call proceeds with the endpoints' own SDP
    REFUSE = "refuse"  # rtpengine unusable: 503 to the customer, no vendor is tried


class Side(StrEnum):
    CUSTOMER = "customer"  # the caller's leg (the trunk)
    VENDOR = "vendor"      # the carrier's leg


class Op(StrEnum):
    OFFER = "offer"
    ANSWER = "answer"


CARRIER_FLAGS = ("replace-origin", "replace-session-connection", "ICE=remove", "RTP/AVP",
                 "rtcp-mux-demux")
# rtpengine encoding names: PCMU, G729, telephone-event, AMR-WB, opus, ...
_CODEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    anchor: Anchor = Anchor.NEVER
    codecs: tuple[str, ...] = ()  # allowed codecs; empty: all
    on_failure: OnFailure = OnFailure.CARRY


def codec_problems(policy: MediaPolicy) -> list[str]:
    """Codec names rtpengine could not take as flags (spaces or '=' would change the flag list)."""
    return [f"codec {c!r} is not an encoding name" for c in policy.codecs if not _CODEC.match(c)]


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """What one call does with its media; kept with the dialog as JSON."""

    anchor: bool
    reason: str
    nat: bool = False
    codecs: tuple[str, ...] = ()
    on_failure: OnFailure = OnFailure.CARRY

    def to_json(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "reason": self.reason, "nat": self.nat, "codecs": list(self.codecs),
                "on_failure": self.on_failure.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MediaPlan:
        return cls(bool(data["anchor"]), str(data.get("reason", "")), bool(data.get("nat")),
                   tuple(data.get("codecs") or ()), OnFailure(data.get("on_failure", "carry")))


def _hostport(text: str, default_port: int = 5060) -> tuple[str, int] | None:
    """host and port of 'host', 'host:port', '[v6]:port' (no scheme, no parameters)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":") if text.count(":") <= 1 else (text, "", "")
    if not host or (port and not port.isdigit()):
        return None
    return host, int(port) if port else default_port


def via_sent_by(via: str) -> tuple[str, int] | None:
    """The sent-by of a Via value: 'SIP/2.0/UDP 10.0.0.5:5062;branch=...' -> ('10.0.0.5', 5062)."""
    parts = via.split(None, 1)
    if len(parts) != 2:
        return None
    return _hostport(parts[1].split(";", 1)[0].split(",", 1)[0])


def contact_hostport(contact: str) -> tuple[str, int] | None:
    """host and port of a Contact value: '<sip:user@host:port;transport=udp>;expires=60'."""
    match = re.search(r"sips?:(?:[^@>;\s]*@)?(\[[^\]]+\]|[^:;>\s?]+)(?::(\d+))?", contact)
    if match is None:
        return None
    host = match.group(1).strip("[]")
    return host, int(match.group(2)) if match.group(2) else 5060


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def behind_nat(source_ip: str, source_port: int, via: str, contact: str) -> str | None:
    """Why the sender looks NATed (its packets come from elsewhere than it says), or None.

    The tests of nathelper's nat_uac_test 2/16/32/64: Via sent-by and Contact address against
    the source address and port. A private address in the SDP alone is not enough: plenty of
    carriers advertise one behind a session border controller that does its own NAT traversal.
    """
    for what, found in (("Via", via_sent_by(via) if via else None),
                        ("Contact", contact_hostport(contact) if contact else None)):
        if found is None:
            continue
        host, port = found
        if not _same_ip(host, source_ip):
            return f"{what} {host} differs from source {source_ip}"
        if port != source_port:
            return f"{what} port {port} differs from source port {source_port}"
    return None


def plan_media(policy: MediaPolicy, nat_reason: str | None, enabled: bool = True) -> MediaPlan:
    """Whether this call is anchored, and why (the reason goes into the CDR)."""
    nat = nat_reason is not None
    if not enabled:
        return MediaPlan(False, "no media relay on this node", nat)
    if policy.anchor is Anchor.NEVER:
        return MediaPlan(False, "trunk policy never", nat)
    if policy.anchor is Anchor.NAT and not nat:
        return MediaPlan(False, "trunk policy nat: not behind NAT", nat)
    reason = "trunk policy always" if policy.anchor is Anchor.ALWAYS else f"trunk policy nat: {nat_reason}"
    return MediaPlan(True, reason, nat, policy.codecs, policy.on_failure)


def ng_flags(plan: MediaPlan, side: Side, op: Op) -> str:
    """The flags for rtpengine_offer/rtpengine_answer on an SDP that ``side`` sent.

    The trunk's codec list is applied to whichever SDP is the offer (the customer's INVITE, or
    the vendor's 200 in a late-offer call), so the far end never sees a codec the trunk may not
    use. A NATed customer's media address is taken from its SIP source, not from its SDP.
    """
    flags = list(CARRIER_FLAGS)
    if side is Side.CUSTOMER and plan.nat:
        flags.append("SIP-source-address")
    if op is Op.OFFER and plan.codecs:
        flags.append("codec-strip-all")
        flags.extend(f"codec-except-{c}" for c in plan.codecs)
    return " ".join(flags)


# ------------------------------------------------------------------ statistics at call end

def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def call_stats(response: Mapping[str, Any], caller_tag: str) -> dict[str, Any]:
    """The CDR's view of an rtpengine query response: RTP packets, bytes and errors in total and
    received from each side (the caller's leg is its From tag; every other tag is the vendor's),
    and MOS and packet loss where rtpengine computed them (it needs RTCP from the peers)."""
    totals = response.get("totals") or {}
    rtp = totals.get("RTP") or {}
    out: dict[str, Any] = {"packets": _int(rtp.get("packets")), "bytes": _int(rtp.get("bytes")),
                           "errors": _int(rtp.get("errors")), "from_customer": 0, "from_vendor": 0}
    for tag, leg in (response.get("tags") or {}).items():
        received = 0
        for media in leg.get("medias") or []:
            for stream in media.get("streams") or []:
                if "RTCP" not in (stream.get("flags") or ()):
                    received += _int((stream.get("stats") or {}).get("packets"))
        out["from_customer" if str(tag) == caller_tag else "from_vendor"] += received
    mos_tenths: list[int] = []  # rtpengine reports MOS x 10
    loss: list[int] = []
    for ssrc in (response.get("SSRC") or {}).values():
        average = ssrc.get("average MOS") or {}
        if average.get("MOS"):
            mos_tenths.append(_int(average["MOS"]))
            loss.append(_int(average.get("packet loss")))
    if mos_tenths:
        out["mos"] = min(mos_tenths) / 10
        out["loss_percent"] = max(loss)
    return out
