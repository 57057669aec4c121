"""Topology hiding, per trunk: which calls Kamailio's topos module leaves alone.

topos (kamailio.cfg) strips Via, Record-Route and Contact at the network boundary, so each side
sees only our address, and keeps what it removed in the shared Redis so any in-dialog request
can be put back together on any node. It is on for every call unless the call's trunk has
``topology_hiding`` off; such a call (its Call-ID with its caller's From tag) is written to the
node's ``tpskip`` table when it is relayed, and topos is told to skip every message of it (both
directions, so the dialog is consistent: either fully hidden or not at all). In-dialog messages
always pass the node that record-routed the call, so a per-node table is enough.

Not the Call-ID alone: calls may share one, and the entry outlives its call by hours, so a
hidden customer's call with a Call-ID an exposed trunk had used went out unhidden. Every message
of a call carries the caller's tag, as its From tag (the caller's requests, and the answers to
them) or as its To tag (the callee's requests and their answers): a message is skipped when
either of its tags names a skipped call.
"""

from __future__ import annotations

from routing_engine.domain.snapshot import Trunk

SKIP_TABLE = "tpskip"


def skip_key(call_id: str, caller_tag: str) -> str:
    """The ``tpskip`` entry of one call (a space cannot occur in a Call-ID or a tag)."""
    return f"{call_id} {caller_tag}"


def hides(trunk: Trunk | None) -> bool:
    """Is this trunk's traffic topology-hidden? (an unknown trunk is: hiding is the default)"""
    return trunk is None or trunk.topology_hiding
