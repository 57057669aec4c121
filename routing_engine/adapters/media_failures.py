"""Media failures: the one counter of calls whose media relay failed, shared by every node.

A Redis hash, one field per kind (``offer``, ``answer``, ``delete``, ``refused``, ``carried``);
every failure in routing_engine/calls/media.py goes through ``count`` and nowhere else, so a metrics exporter
reads ``counts`` (or HGETALL warp:media:failures) and has them all.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("warp.media")

KEY = "warp:media:failures"
KINDS = ("offer", "answer", "delete", "refused", "carried")


def count(client: Any, kind: str) -> None:
    """Add one failure of ``kind``; best effort (a counter never fails a call)."""
    try:
        client.hincrby(KEY, kind, 1)
    except Exception as exc:
        log.warning("media failure (%s) not counted: %s", kind, exc)


def counts(client: Any) -> dict[str, int]:
    raw = client.hgetall(KEY)
    found = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
    return {kind: found.get(kind, 0) for kind in KINDS} | found
