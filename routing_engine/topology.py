"""Topology hiding, per trunk: which calls Kamailio's topos module leaves alone.

topos (kamailio.cfg) strips Via, Record-Route and Contact at the network boundary, so each side
sees only our address, and keeps what it removed in the shared Redis so any in-dialog request
can be put back together on any node. It is on for every call unless the call's trunk has
``topology_hiding`` off; such a call's Call-ID is written to the node's ``tpskip`` table when
it is relayed, and topos is told to skip every message carrying it (both directions, so the
dialog is consistent: either fully hidden or not at all). In-dialog messages always pass the
node that record-routed the call, so a per-node table is enough.
"""

from __future__ import annotations

from routing_engine.snapshot import Trunk

SKIP_TABLE = "tpskip"


def hides(trunk: Trunk | None) -> bool:
    """Is this trunk's traffic topology-hidden? (an unknown trunk is: hiding is the default)"""
    return trunk is None or trunk.topology_hiding
