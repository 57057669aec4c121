import uuid

import redis

from routing_engine.adapters.quality import QualityView, read, record

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
