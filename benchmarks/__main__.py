"""make bench: run the benchmarks, print a table, write bench-results/results.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import cdr_pipeline, decision


def main() -> int:
    results: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
    }
    print("routing decision (in process, generated data) ...", flush=True)
    results["decision"] = decision.run()
    print("CDR pipeline (embedded Redis and Postgres) ...", flush=True)
    results["cdr_pipeline"] = cdr_pipeline.run()
    out = Path(__file__).resolve().parent.parent / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'benchmark':42} {'value':>12}")
    for section in ("decision", "cdr_pipeline"):
        for key, value in results[section].items():  # type: ignore[union-attr]
            print(f"{key:42} {value!s:>12}")
    print(f"\nwritten to {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
