"""Redis adapter: the CDR stream the SIP workers append to and the emitter drains.

Calls from SIP workers use short socket timeouts (settings: redis.socket_timeout_ms) so a slow
or dead Redis costs a call a bounded wait, never a stuck worker.
"""

from __future__ import annotations

from typing import Any

import redis

from routing_engine import metrics
from routing_engine.domain.cdr import CdrRecord


def connect(url: str, timeout_ms: int) -> redis.Redis[str]:
    timeout = timeout_ms / 1000
    client: redis.Redis[str] = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
        health_check_interval=30,
    )
    pool = client.connection_pool
    pool.connection_class = _counted(pool.connection_class)  # connections are made on first use
    return client


_COUNTED: dict[type, type] = {}


def _counted(base: type) -> type:
    """``base`` counting what it sends (``warp_redis_round_trips_total``): one command, or one
    whole pipeline, is one round trip."""
    if (known := _COUNTED.get(base)) is None:
        sent = metrics.REDIS_ROUND_TRIPS

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
            sent.inc()
            base.send_packed_command(self, command, check_health)  # type: ignore[attr-defined]

        known = _COUNTED[base] = type(f"Counted{base.__name__}", (base,),
                                      {"send_packed_command": send_packed_command})
    return known


class CdrStream:
    """Append-only stream of CDR records, read by the emitter's consumer group.

    ``shared``: more than one group reads the stream (Postgres and BigQuery), so an entry one
    group acknowledged may not be deleted yet; instead the stream is trimmed to the oldest entry
    any group still needs (pending, or not read yet)."""

    def __init__(self, client: redis.Redis[str], stream: str, group: str, maxlen: int,
                 shared: bool = False) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.maxlen = maxlen
        self.shared = shared

    def append(self, record: CdrRecord, pipe: Any = None) -> str | None:
        """Add to the stream; the entry id, or None when queued on a pipeline the caller executes."""
        fields: Any = record.to_fields()
        if pipe is not None:
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            return None
        entry_id: str = self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        return entry_id

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_pending(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries delivered to this consumer before but never acknowledged (it crashed)."""
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: "0"}, count=count)
        return list(reply[0][1]) if reply else []

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    def dead_letter(self, entry_id: str, data: dict[str, str], error: str) -> None:
        """Park an entry the emitter cannot understand, so it neither blocks nor vanishes."""
        fields: Any = {**data, "_error": error, "_entry": entry_id}
        self.client.xadd(f"{self.stream}:dead", fields)

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.client.xack(self.stream, self.group, *entry_ids)  # type: ignore[no-untyped-call]
            if self.shared:
                self.trim_read_by_all()
            else:
                self.client.xdel(self.stream, *entry_ids)

    def trim_read_by_all(self) -> None:
        """Remove the entries every group has read and acknowledged (XTRIM MINID)."""
        needed: list[tuple[int, int]] = []
        for g in self.client.xinfo_groups(self.stream):  # type: ignore[no-untyped-call]
            summary: Any = self.client.xpending(self.stream, g["name"])  # type: ignore[no-untyped-call]
            if summary["pending"]:
                needed.append(_entry_id(summary["min"]))
            else:
                ms, seq = _entry_id(g["last-delivered-id"])
                needed.append((ms, seq + 1))
        if needed:
            ms, seq = min(needed)
            self.client.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=False)

    def backlog(self) -> int:
        length: int = self.client.xlen(self.stream)
        return length


def _entry_id(text: str) -> tuple[int, int]:
    ms, _, seq = str(text).partition("-")
    return int(ms), int(seq or 0)
