"""make bench: run the benchmarks, print a table, write bench-results/results.json.

    python -m benchmarks [--full] [--only decision,cdr_pipeline,funds,capacity,reload,replay]
                         [--configs A,A0,B,Bmin,C] [--reps N] [--profile S] [--state-check]

Capacity runs every configuration --reps times (default 3) and prints medians with their
spread (min-max); --reps 1 is a quick run. --full takes longer, steadier steps. --state-check
runs only issue 17's check instead: A twice in a row on the same Redis, and the Redis key
families that stay behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import capacity, cdr_pipeline, decision, funds, reload, replay


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM too: every benchmark stops what it started on the way out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--full", action="store_true", help="longer load steps, finer bisection")
    parser.add_argument("--only", default="",
                        help="comma-separated: decision, cdr_pipeline, funds, capacity, reload, replay")
    parser.add_argument("--configs", default="A,A0,B,Bmin,C", help="capacity configurations to run")
    parser.add_argument("--reps", type=int, default=3, metavar="N",
                        help="capacity: runs of every configuration (medians and spread reported)")
    parser.add_argument("--state-check", action="store_true",
                        help="only run A twice on the same Redis and report the Redis keys left behind")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="capacity: profile A's workers with py-spy under load first")
    parser.add_argument("--children", type=int, default=0, metavar="N",
                        help="capacity, reload: UDP workers of every configuration (default 4)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    only = set(filter(None, args.only.split(",")))
    options = capacity.FULL if args.full else capacity.QUICK
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    unknown = set(args.configs.split(",")) - set(capacity.CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; known: {', '.join(capacity.CONFIGS)}")
    options = capacity.Options(**{**options.__dict__, "configs": tuple(args.configs.split(",")),
                                    "profile_s": args.profile, "reps": args.reps,
                                    "children": args.children or options.children})
    if args.children < 0:
        parser.error("--children must be at least 1")
    benchmarks: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("decision", "routing decision (in process, generated data)", decision.run),
        ("cdr_pipeline", "CDR pipeline (embedded Redis and Postgres)", cdr_pipeline.run),
        ("funds", "funds: admission and slice renewal in Redis as an account's calls grow", funds.run),
        ("capacity", "capacity: WARP (A, A0) vs native (B, B-min) vs null proxy (C), SIPp on loopback",
         lambda: capacity.run(options)),
        ("reload", "reload under load: SQL edits while SIPp calls run, node memory with a large deck",
         lambda: reload.run(seconds=120 if args.full else 60, opts=options)),
        ("replay", "replay: a day of CDRs decided again on a draft (embedded Postgres)",
         lambda: replay.run(calls=1_000_000 if args.full else 200_000)),
    ]
    if args.state_check:
        benchmarks = [("capacity_state", "capacity: A twice on the same Redis, what stays behind",
                       lambda: capacity.state_growth(options))]
    results: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
    }
    for name, title, bench in benchmarks:
        if not only or name in only:
            print(f"{title} ...", flush=True)
            results[name] = bench()
    out = Path(__file__).resolve().parent.parent / "bench-results"
    out.mkdir(exist_ok=True)
    path = out / ("results-state.json" if args.state_check else "results.json")
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{'benchmark':42} {'value':>12}")
    for name, _, _ in benchmarks:
        found: dict[str, Any] = results.get(name, {})  # type: ignore[assignment]
        spread = found.get("spread", {})
        for key, value in found.items():
            if not isinstance(value, dict | list):  # details stay in the results file
                lo_hi = spread.get(key)
                extra = f"  ({lo_hi[0]}-{lo_hi[1]})" if lo_hi and lo_hi[0] != lo_hi[1] else ""
                print(f"{key:42} {value!s:>12}{extra}")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
