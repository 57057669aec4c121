"""One simulated SIP worker for the memory benchmark: map the published snapshot, route calls,
say "warm", and on "measure" report its memory (from /proc/self/smaps_rollup)."""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from benchmarks.decision import call_numbers, decide_all
from routing_engine.adapters.snapshots import SnapshotStore


def _rollup_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {"rss_mb": fields["Rss"], "pss_mb": fields["Pss"]}


def main(directory: str, version: str, calls: int) -> None:
    started = time.perf_counter()
    snapshot = SnapshotStore(Path(directory)).load(version)
    load_ms = (time.perf_counter() - started) * 1000
    gc.freeze()
    decide_all(snapshot, call_numbers(snapshot, calls))
    print("warm", flush=True)
    sys.stdin.readline()
    print(json.dumps({**_rollup_mb(), "load_ms": load_ms}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
