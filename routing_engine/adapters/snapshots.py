"""Published snapshots: how a new routing configuration reaches every SIP worker.

The companion builds a snapshot from Postgres, validates it, and publishes it here: one packed
file per version (packed.py), and a small ``current`` file naming the version in service and the
one before it. Workers map a version's file read-only, so a node's workers share one copy of the
big tables and a reload costs a map, not a rebuild in every process. A SIP worker looks at
``current`` at most every ``check_interval`` (a stat, no I/O beyond it) and swaps in a new
version in one assignment, so a call sees one version or the other, never a mix. Rolling back
is pointing ``current`` at the previous version.
"""

from __future__ import annotations

import gc
import json
import logging
import mmap
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from routing_engine import metrics
from routing_engine.adapters import migrate, packed
from routing_engine.domain.snapshot import RoutingSnapshot

SCHEMA = migrate.latest()  # the schema this code builds snapshots from

log = logging.getLogger("warp.snapshots")


@dataclass(frozen=True)
class Published:
    version: str
    built_at: datetime
    previous: str | None
    published_at: datetime


class SnapshotStore:
    def __init__(self, directory: Path, keep: int = 5) -> None:
        self.directory = directory
        self.keep = keep

    @property
    def current_file(self) -> Path:
        return self.directory / "current"

    def _write_atomically(self, path: Path, write: Callable[[IO[bytes]], object]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def current(self) -> Published | None:
        try:
            data = json.loads(self.current_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return Published(data["version"], datetime.fromisoformat(data["built_at"]), data.get("previous"),
                         datetime.fromisoformat(data["published_at"]))

    def publish(self, snapshot: RoutingSnapshot) -> bool:
        """Put ``snapshot`` in service; False if that version already is (in this code's format)."""
        now = self.current()
        if now is not None and now.version == snapshot.version and self.readable(snapshot.version) is None:
            return False
        self._write_atomically(self.path(snapshot.version), lambda fh: packed.write(snapshot, fh, SCHEMA))
        self._point_at(snapshot.version, snapshot.loaded_at, now.version if now else None)
        self._prune()
        return True

    def _point_at(self, version: str, built_at: datetime, previous: str | None) -> None:
        body = {"version": version, "built_at": built_at.isoformat(), "previous": previous,
                "published_at": datetime.now(UTC).isoformat()}
        self._write_atomically(self.current_file, lambda fh: fh.write(json.dumps(body).encode()))

    def rollback(self) -> Published:
        now = self.current()
        if now is None or not now.previous or not self.path(now.previous).exists():
            raise LookupError("no previous snapshot to roll back to")
        previous = self.load(now.previous)
        self._point_at(previous.version, previous.loaded_at, now.version)
        current = self.current()
        assert current is not None
        return current

    def path(self, version: str) -> Path:
        return self.directory / f"{version}.snap"

    def readable(self, version: str) -> str | None:
        """Why this code cannot read the published file of ``version`` (None: it can): missing,
        or written by another version of the code or from another schema."""
        try:
            with self.path(version).open("rb") as fh:
                packed.check(fh.read(4096), SCHEMA)
        except FileNotFoundError:
            return "no such file"
        except packed.FormatMismatch as exc:
            return str(exc)
        return None

    def load(self, version: str) -> RoutingSnapshot:
        """The published version, its tables read in place from a shared read-only map of its file
        (the map lives as long as the snapshot does; unlinking the file later does not disturb it).
        A file of another code version or schema raises packed.FormatMismatch."""
        with self.path(version).open("rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return packed.read(mapped, SCHEMA)

    def _prune(self) -> None:
        now = self.current()
        keep = {now.version, now.previous} if now else set()
        files = sorted(self.directory.glob("*.snap"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in files[self.keep :]:
            if path.stem not in keep:
                path.unlink(missing_ok=True)
        for path in self.directory.glob("*.pickle"):  # the format before packed files
            path.unlink(missing_ok=True)


class SnapshotFollower:
    """A SIP worker's view: the snapshot in service, swapped when a new one is published.

    Only publications made after the worker read its first snapshot count: a file left by an
    earlier run (or another data set) is never taken for news."""

    def __init__(self, store: SnapshotStore, initial: RoutingSnapshot, check_interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.snapshot = initial
        self.accept_after = initial.loaded_at
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._next_check = 0.0
        self._seen: tuple[int, int] | None = None

    def get(self) -> RoutingSnapshot:
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self._refresh()
        return self.snapshot

    def _refresh(self) -> None:
        try:
            st = self.store.current_file.stat()
        except FileNotFoundError:
            return
        mark = (st.st_ino, st.st_mtime_ns)
        if mark == self._seen:
            return
        self._seen = mark
        published = self.store.current()
        if published is None or published.version == self.snapshot.version:
            return
        if published.published_at <= self.accept_after:
            return
        try:
            started = time.perf_counter()
            snapshot = self.store.load(published.version)
        except Exception as exc:  # keep routing on what we have
            log.error("snapshot %s could not be loaded, staying on %s: %s", published.version,
                      self.snapshot.version, exc)
            return
        old, self.snapshot = self.snapshot.version, snapshot
        metrics.SNAPSHOT_RELOADS.inc()
        gc.freeze()  # the snapshot's objects live until the next swap: keep the collector off them
        log.info("routing snapshot %s -> %s (built %s, loaded in %.1f ms)", old, snapshot.version,
                 published.built_at.astimezone(UTC).isoformat(timespec="seconds"),
                 (time.perf_counter() - started) * 1000)
