import uuid

import redis

from routing_engine.adapters.quality import Outcome, QualityView, read, read_prefix, record

T = 1_800_000_000.0
V = uuid.uuid4()


class Clock:
    t = T

    def __call__(self) -> float:
        return self.t


def outcomes(answered: int, failed: int, seconds: int = 60) -> list[tuple[str, bool, int]]:
    return [(str(V), True, seconds)] * answered + [(str(V), False, 0)] * failed


def test_attempts_add_up_over_the_window_and_old_minutes_fall_out(redis_client: redis.Redis) -> None:
    record(redis_client, outcomes(3, 1), T, 900)
    record(redis_client, outcomes(1, 1), T + 120, 900)
    q = read(redis_client, [V], T + 120, 900)[V]
    assert (q.attempts, q.answered, q.asr, q.acd) == (6, 4, 4 / 6, 60)
    assert read(redis_client, [V], T + 1000, 900)[V].attempts == 2  # the first minute left the window


def test_a_poor_vendor_is_demoted_and_restored_only_past_the_hysteresis(redis_client: redis.Redis) -> None:
    clock = Clock()
    view = QualityView(redis_client, window_s=900, min_samples=20, asr_min=0.2, hysteresis=0.05, refresh_s=0,
                       clock=clock)
    record(redis_client, outcomes(2, 17), T, 900)
    assert view.demotion(V) is None  # 19 attempts: too few to judge
    record(redis_client, outcomes(0, 1), T, 900)
    reason = view.demotion(V)
    assert reason is not None and reason.startswith("demoted: ASR 10% over 20 attempts")
    record(redis_client, outcomes(3, 0), T, 900)  # 5/23 = 22%: above 20%, not above 25%
    assert view.demotion(V) is not None
    record(redis_client, outcomes(3, 0), T, 900)  # 8/26 = 31%
    assert view.demotion(V) is None


def test_without_redis_nobody_is_demoted() -> None:
    view = QualityView(redis.Redis(port=1, socket_connect_timeout=0.1), refresh_s=0)
    assert view.demotion(V) is None


def test_a_vendor_poor_on_one_prefix_is_demoted_there_only(redis_client: redis.Redis) -> None:
    view = QualityView(redis_client, window_s=900, min_samples=20, asr_min=0.2, refresh_s=0, clock=Clock(),
                       prefix_digits=4)
    good = [Outcome(str(V), True, 60, 2000, "447700900123")] * 30
    poor = [Outcome(str(V), False, 0, None, "12125551234")] * 18 + [Outcome(str(V), True, 30, 2500, "12125550000")] * 2
    record(redis_client, good + poor, T, 900, prefix_digits=4)
    assert read(redis_client, [V], T, 900)[V].attempts == 50  # 32/50 answered overall: not demoted as a whole
    assert view.demotion(V, [V], "447700900999") is None
    reason = view.demotion(V, [V], "12125559999")
    assert reason is not None and reason.startswith("demoted for 1212*: ASR 10% over 20 attempts")
    assert read_prefix(redis_client, "1212", T, 900)[str(V)].pdd_ms == 2500


def test_a_slow_to_ring_vendor_is_demoted_on_pdd_when_a_limit_is_set(redis_client: redis.Redis) -> None:
    view = QualityView(redis_client, window_s=900, min_samples=20, asr_min=0.2, hysteresis=0.05, refresh_s=0,
                       clock=Clock(), pdd_max_ms=3000)
    record(redis_client, [Outcome(str(V), True, 60, 4000)] * 20, T, 900)
    reason = view.demotion(V)
    assert reason == "demoted: PDD 4000 ms over 20 attempts (above 3000 ms), ASR 100%"
    record(redis_client, [Outcome(str(V), True, 60, 1900)] * 20, T, 900)  # average 2950: not below 2850
    assert view.demotion(V) is not None
    record(redis_client, [Outcome(str(V), True, 60, 1000)] * 20, T, 900)  # 2300
    assert view.demotion(V) is None
