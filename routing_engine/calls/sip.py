"""What the call service reads from a SIP message, and the SIP actions it answers with.

kemi/ fills the message values from Kamailio and applies the actions; the call service never
touches Kamailio itself. An action is a value: a test can read exactly what a callback would
have done.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing_engine.calls.state import CallState
from routing_engine.domain.decision import CallRequest


@dataclass(frozen=True, slots=True)
class Invite:
    """An initial INVITE (or REGISTER: the same fields identify its sender)."""

    request: CallRequest
    from_tag: str = ""
    auth_user: str = ""            # the digest username, if credentials came
    via: str = ""
    contact: str = ""
    has_sdp: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """A vendor attempt's final failure, as tm's failure route sees it."""

    canceled: bool                 # the caller gave up: tm answers 487 itself
    code: int
    reason: str
    reason_header: str = ""        # the reply's Reason header (its Q.850 cause)
    branch_timeout: bool = False   # no final answer came: the timer ended it


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request: statelessly, or (``stateful``) within its transaction."""

    code: int
    reason: str
    headers: tuple[str, ...] = ()
    stateful: bool = False


@dataclass(frozen=True, slots=True)
class Challenge:
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Nothing:
    """Send nothing (handled already, absorbed, or dropped on purpose)."""


@dataclass(frozen=True, slots=True)
class ArmMedia:
    """Have this transaction's replies given to the media relay: who sent the request, whether
    it carried an SDP, and the call's media plan (JSON)."""

    sender: str
    had_sdp: bool
    plan: str


@dataclass(frozen=True, slots=True)
class Setup:
    """What the first relay of a new call also does: its dialog, with ``timeout_s`` (None: none),
    the topology hiding skip key of a trunk that has hiding off, and its media replies."""

    timeout_s: int | None = None
    skip_topology: str | None = None
    media: ArmMedia | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the INVITE to ``ruri`` (via ``dst``), plus parallel ``branches``; the call's new state
    goes into its dialog first."""

    state: CallState
    ruri: str
    dst: str | None = None
    branches: tuple[tuple[str, str | None], ...] = ()
    timers_ms: tuple[int, int] | None = None    # tm's fr_inv and fr timers (None: as they are)
    vendor_replies: bool = False                # replies go through the vendor reply route
    setup: Setup | None = None
    branch_route: bool = True                   # each branch goes through the branch route


@dataclass(frozen=True, slots=True)
class Relay:
    """Relay an in-dialog request (to ``ruri`` when set: a BYE carried by its dialog)."""

    media: ArmMedia | None = None
    ruri: str | None = None


Action = Reply | Challenge | Nothing | Forward | Relay
NOTHING = Nothing()


def unsupported_scheme(start_line: str) -> bool:
    """A request line whose Request-URI has a well-formed scheme that is not ours: 416, not the
    sanity module's 400 (RFC 3261 8.2.2.1)."""
    parts = start_line.split(" ")
    scheme = parts[1].split(":", 1)[0].lower() if len(parts) > 2 and ":" in parts[1] else ""
    return bool(scheme[:1].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)
                and scheme not in ("sip", "sips", "tel", "tels"))
