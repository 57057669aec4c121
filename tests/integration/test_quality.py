"""Vendor quality on a real Redis: a call's end adds one stream entry, the companion's aggregator
judges the window and publishes verdicts, the workers read them at most once per refresh."""

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from routing_engine.adapters.quality import (
    STREAM,
    VERDICTS,
    Aggregator,
    Judge,
    Outcome,
    QualityView,
    figures,
    record,
)

T = 1_800_000_000.0
V = uuid.uuid4()


class Clock:
    def __init__(self, t: float = T) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def r(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    redis_client.delete(STREAM, VERDICTS)
    yield redis_client
    redis_client.delete(STREAM, VERDICTS)


def outcomes(answered: int, failed: int, seconds: int = 60) -> list[tuple[str, bool, int]]:
    return [(str(V), True, seconds)] * answered + [(str(V), False, 0)] * failed


def aggregator(client: redis.Redis, clock: Clock, prefix_digits: int = 0, pdd_max_ms: int = 0) -> Aggregator:
    return Aggregator(client, Judge(min_samples=20, asr_min=0.2, hysteresis=0.05, pdd_max_ms=pdd_max_ms),
                      window_s=900, prefix_digits=prefix_digits, publish_s=0, clock=clock)


def commands(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def test_attempts_add_up_over_the_window_and_old_minutes_fall_out(r: redis.Redis) -> None:
    clock = Clock(T + 120)
    agg = aggregator(r, clock)
    record(r, outcomes(3, 1), T)
    record(r, outcomes(1, 1), T + 120)
    agg.step()
    q = figures(r)[str(V)]
    assert (q.attempts, q.answered, q.asr, q.acd) == (6, 4, 4 / 6, 60)
    clock.t = T + 1000
    agg.step()
    assert figures(r)[str(V)].attempts == 2  # the first minute left the window


def test_a_poor_vendor_is_demoted_and_restored_only_past_the_hysteresis(r: redis.Redis) -> None:
    clock = Clock()
    agg = aggregator(r, clock)
    view = QualityView(r, refresh_s=0, clock=clock)
    record(r, outcomes(2, 17), T)
    agg.step()
    assert view.demotion(V) is None  # 19 attempts: too few to judge
    record(r, outcomes(0, 1), T)
    agg.step()
    reason = view.demotion(V)
    assert reason is not None and reason.startswith("demoted: ASR 10% over 20 attempts")
    record(r, outcomes(3, 0), T)  # 5/23 = 22%: above 20%, not above 25%
    agg.step()
    assert view.demotion(V) is not None
    record(r, outcomes(3, 0), T)  # 8/26 = 31%
    agg.step()
    assert view.demotion(V) is None


def test_without_redis_nobody_is_demoted() -> None:
    view = QualityView(redis.Redis(port=1, socket_connect_timeout=0.1), refresh_s=0)
    assert view.demotion(V) is None


def test_a_vendor_poor_on_one_prefix_is_demoted_there_only(r: redis.Redis) -> None:
    clock = Clock()
    agg = aggregator(r, clock, prefix_digits=4)
    view = QualityView(r, refresh_s=0, clock=clock, prefix_digits=4)
    good = [Outcome(str(V), True, 60, 2000, "447700900123")] * 30
    poor = [Outcome(str(V), False, 0, None, "12125551234")] * 18 + [Outcome(str(V), True, 30, 2500, "12125550000")] * 2
    record(r, good + poor, T)
    agg.step()
    assert figures(r)[str(V)].attempts == 50  # 32/50 answered overall: not demoted as a whole
    assert view.demotion(V, [V], "447700900999") is None
    reason = view.demotion(V, [V], "12125559999")
    assert reason == "demoted for 1212*: ASR 10% over 20 attempts (below 20%), ACD 30 s, PDD 2500 ms"


def test_a_slow_to_ring_vendor_is_demoted_on_pdd_when_a_limit_is_set(r: redis.Redis) -> None:
    clock = Clock()
    agg = aggregator(r, clock, pdd_max_ms=3000)
    view = QualityView(r, refresh_s=0, clock=clock)
    record(r, [Outcome(str(V), True, 60, 4000)] * 20, T)
    agg.step()
    assert view.demotion(V) == "demoted: PDD 4000 ms over 20 attempts (above 3000 ms), ASR 100%"
    record(r, [Outcome(str(V), True, 60, 1900)] * 20, T)  # average 2950: not below 2850
    agg.step()
    assert view.demotion(V) is not None
    record(r, [Outcome(str(V), True, 60, 1000)] * 20, T)  # 2300
    agg.step()
    assert view.demotion(V) is None


def test_a_calls_end_records_its_attempts_with_one_command(r: redis.Redis) -> None:
    before = commands(r)
    pipe = r.pipeline(transaction=False)
    record(r, [Outcome(str(V), False, 0, None, "12125551234"), Outcome(str(uuid.uuid4()), True, 42, 900,
                                                                         "12125551234")], T, pipe=pipe)
    pipe.execute()
    after = commands(r)
    sent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    sent.pop("info", None)  # the first reading itself
    assert sent == {"xadd": 1}
    assert r.xlen(STREAM) == 1


def test_a_worker_reads_the_verdicts_once_per_refresh_whatever_its_call_rate(r: redis.Redis) -> None:
    clock = Clock()
    record(r, outcomes(0, 25), T)
    aggregator(r, clock).step()
    view = QualityView(r, refresh_s=1.0, clock=clock)
    before = commands(r).get("get", 0)
    for i in range(200):  # 200 decisions over 1.9 s
        clock.t = T + i * 0.0095
        assert view.demotion(V, [V, uuid.uuid4()], "12125551234") is not None
    assert commands(r)["get"] - before == 2


def test_verdicts_nobody_renews_are_not_used(r: redis.Redis) -> None:
    clock = Clock()
    record(r, outcomes(0, 25), T)
    aggregator(r, clock).step()
    view = QualityView(r, refresh_s=0, clock=clock, stale_s=60)
    assert view.demotion(V) is not None
    clock.t = T + 61  # no companion published since
    assert view.demotion(V) is None


def test_a_malformed_entry_is_skipped_and_the_others_count(r: redis.Redis) -> None:
    clock = Clock()
    agg = aggregator(r, clock)
    record(r, outcomes(1, 0), T)
    r.xadd(STREAM, {"t": "yesterday", "o": "[["})
    r.xadd(STREAM, {"o": json.dumps([[str(V), 1, 10, None, ""]])})
    record(r, outcomes(0, 1), T)
    agg.step()
    assert agg.skipped == 2
    assert figures(r)[str(V)].attempts == 2


def test_a_restarted_companion_rebuilds_the_window_and_keeps_the_demotions(r: redis.Redis) -> None:
    clock = Clock()
    first = aggregator(r, clock)
    record(r, outcomes(2, 18), T)  # 10%: demoted
    first.step()
    record(r, outcomes(3, 0), T)  # 5/23 = 22%: demoted still, by the hysteresis
    again = aggregator(r, clock)  # a new companion: the window read back from the stream
    again.step()
    assert figures(r)[str(V)].attempts == 23
    assert QualityView(r, refresh_s=0, clock=clock).demotion(V) is not None


def test_the_stream_keeps_only_what_the_window_needs(r: redis.Redis) -> None:
    import time

    old = int((time.time() - 3600) * 1000)
    for i in range(5):  # an hour ago, by Redis's clock
        r.xadd(STREAM, {"t": str(T), "o": json.dumps([[str(V), 0, 0, None, ""]])}, id=f"{old}-{i}")
    record(r, outcomes(1, 0), T)
    aggregator(r, Clock()).step()
    assert r.xlen(STREAM) == 1


@pytest.mark.parametrize("published", ["not json", '["a list"]', '{"at": "yesterday"}', '{"at": 1, "vendors": []}'])
def test_verdicts_a_worker_cannot_understand_demote_nobody(r: redis.Redis, published: str) -> None:
    r.set(VERDICTS, published)
    assert QualityView(r, refresh_s=0, clock=Clock(1.0)).demotion(V) is None
