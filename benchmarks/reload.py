"""Reload under load, and the node's memory with a large deck.

Configuration A of the capacity benchmark (the real node: Kamailio with the configured workers,
the companion publishing snapshots), with the generated vendors plus one extra vendor deck of
``extra_rows`` prefixes (default 300,000) so the snapshot is large. A steady SIPp load runs while
ops-style SQL edits change a rate every few seconds. For each edit: commit → published (the
companion rebuilt, validated and published a new version) and commit → in service (the first
call routed on it: the workers' swap counter in the metrics, read from the companion's
endpoint). Then:
failed calls during the whole load (target 0) and the memory of all Kamailio processes before
and after the reloads (PSS: shared pages divided among the processes mapping them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import threading
import time
import urllib.request
from typing import Any

import psycopg

from benchmarks import capacity, capacity_data
from benchmarks.capacity import CUSTOMER, PORT, PROXY, VENDOR, Options, memory_kb, node, run_step
from routing_engine.bootstrap import snapshot_store
from routing_engine.settings import PROJECT_ROOT, load_settings

METRICS_URL = f"http://{PROXY}:9464/metrics"


def _worker_swaps() -> float:
    text = urllib.request.urlopen(METRICS_URL, timeout=5).read().decode()  # noqa: S310 - our loopback endpoint
    return sum(float(m.group(1)) for m in re.finditer(r"^warp_snapshot_reloads_total(?:\{[^}]*\})? (\S+)$",
                                                       text, re.M))


def _wait(predicate: Any, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` holds (polled every 10 ms)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def _add_big_deck(url: str, rows: int) -> str:
    """One more vendor with ``rows`` international prefixes (in the snapshot, not in the plan)."""
    with psycopg.connect(url) as conn:
        vendor = capacity_data._id(conn, "INSERT INTO routing.providers (name) VALUES ('bulk') RETURNING id")
        prefixes = (str(2_000_000 + i) for i in range(rows))  # 7 digits: 20xxxxx..., distinct
        capacity_data._copy(conn, "COPY routing.rates (provider_id, prefix, rate) FROM STDIN",
                            [(vendor, p, "0.0123") for p in prefixes])
    return str(vendor)


def run(rate: int = 100, seconds: int = 60, edits: int = 5, extra_rows: int = 300_000,
        opts: Options | None = None, say: Any = print) -> dict[str, object]:
    opts = opts or Options()
    base = load_settings(environ=capacity._bench_environ({}))
    if not (base.embedded_postgres and base.embedded_redis):
        return {"skipped": "the reload benchmark needs the embedded Postgres and Redis (make bench)"}
    bench_db = os.environ.get("WARP_BENCH_DB", "warp_bench") + "_reload"
    env = capacity._bench_environ({
        "WARP_DATABASE__NAME": bench_db, "WARP_REDIS__DB": os.environ.get("WARP_BENCH_REDIS_DB", "14"),
        "WARP_NODE__NAME": "bench-reload", "WARP_SIP__LISTEN": f"udp:{PROXY}:{PORT}",
        "WARP_SIP__CHILDREN": str(opts.children), "WARP_SIP__TCP_CHILDREN": str(opts.tcp_children),
        "WARP_KAMAILIO__SHM_MB": str(opts.shm_mb), "WARP_MEDIA__ENABLED": "false",
        "WARP_METRICS__LISTEN": f"{PROXY}:9464",
    })
    settings = load_settings(environ=env)
    workdir = PROJECT_ROOT / "bench-results" / "reload"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    shutil.rmtree(snapshot_store(settings).directory, ignore_errors=True)

    data = capacity_data.generate()
    inject = workdir / "calls.csv"
    capacity_data.write_injection_file(data, inject)
    url = capacity_data.fresh_database(settings, bench_db)
    capacity_data.load_warp(url, data, f"{CUSTOMER}/32", (VENDOR, PORT))
    bulk = _add_big_deck(url, extra_rows)
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.flushdb()
        capacity_data.prime_lrn_cache(client, data)
    finally:
        client.close()
    say(f"  reload: {data.rate_rows + extra_rows} rate rows; {rate} calls/s for {seconds} s, {edits} edits")

    store = snapshot_store(settings)
    started_at = time.monotonic()
    with contextlib.ExitStack() as processes:
        t0 = time.monotonic()
        running = processes.enter_context(node("A", env, settings, opts, workdir, "", 0))
        start_s = time.monotonic() - t0
        warm = run_step(running, 50, opts.warmup_calls, opts, workdir / "warmup", inject, "rw")
        if not warm.passed:
            raise RuntimeError(f"reload: warm-up calls failed ({warm.reason}); see {workdir}")
        _wait(lambda: store.current() is not None, 120, "the companion's first publication")
        _wait(lambda: _worker_swaps() >= 0, 10, "the metrics endpoint")
        rss_before, pss_before = memory_kb(running.kamailio_pids())

        result: dict[str, Any] = {}
        load = threading.Thread(target=lambda: result.setdefault(
            "step", run_step(running, rate, rate * seconds, opts, workdir / "load", inject, "rl")))
        load.start()
        published: list[float] = []
        in_service: list[float] = []
        peak_pss = pss_before
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for n in range(edits):
                    if not load.is_alive():
                        break
                    before = store.current()
                    swaps = _worker_swaps()
                    conn.execute("UPDATE routing.rates SET rate = %s WHERE provider_id = %s AND prefix = %s",
                                 (f"0.01{n + 1:02d}", bulk, "2000000"))
                    published.append(_wait(lambda b=before: store.current() != b, 120, "a publication"))
                    # a worker looks for a new version before a call at most every 100 ms, so the
                    # first call routed on it marks it in service (an idle worker swaps on its next
                    # call: Linux hands a lightly loaded socket's datagrams to a few workers only)
                    waited = _wait(lambda s=swaps: _worker_swaps() >= s + 1 or not load.is_alive(), 30,
                                   "a call routed on the new version")
                    if load.is_alive():
                        in_service.append(waited + published[-1])
                    peak_pss = max(peak_pss, memory_kb(running.kamailio_pids())[1])
        finally:
            load.join()
        rss_after, pss_after = memory_kb(running.kamailio_pids())
        step = result["step"]
    return {
        "reload_rate_rows": data.rate_rows + extra_rows,
        "reload_node_start_s": round(start_s, 1),
        "reload_edits": len(published),
        "reload_published_p50_s": round(statistics.median(published), 2) if published else None,
        "reload_published_max_s": round(max(published), 2) if published else None,
        "reload_in_service_p50_s": round(statistics.median(in_service), 2) if in_service else None,
        "reload_in_service_max_s": round(max(in_service), 2) if in_service else None,
        "reload_load_calls": step.calls,
        "reload_failed_calls": step.failed,
        "reload_load_passed": step.passed,
        "reload_kamailio_pss_mb_before": round(pss_before / 1024),
        "reload_kamailio_pss_mb_peak": round(peak_pss / 1024),
        "reload_kamailio_pss_mb_after": round(pss_after / 1024),
        "reload_kamailio_rss_mb_before": round(rss_before / 1024),
        "reload_kamailio_rss_mb_after": round(rss_after / 1024),
        "reload_seconds": round(time.monotonic() - started_at, 1),
    }
