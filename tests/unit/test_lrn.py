import pytest

from routing_engine.adapters import lrn_sources
from routing_engine.domain import lrn
from routing_engine.domain.numbers import normalise


class Cache:
    def __init__(self, data: dict[str, str] | None = None, broken: bool = False) -> None:
        self.data = dict(data or {})
        self.ttls: dict[str, int] = {}
        self.broken = broken

    def get(self, tn: str) -> str | None:
        if self.broken:
            raise ConnectionError("redis down")
        return self.data.get(tn)

    def put(self, tn: str, value: str, ttl_s: int) -> None:
        self.data[tn] = value
        self.ttls[tn] = ttl_s


class Source:
    name = "local"

    def __init__(self, ported: dict[str, str], fail: bool = False) -> None:
        self.ported = ported
        self.fail = fail
        self.calls: list[str] = []

    def lookup(self, tn: str) -> str | None:
        self.calls.append(tn)
        if self.fail:
            raise lrn.LrnError("timed out")
        return self.ported.get(tn)


NY = normalise("12125551234")


def test_ported_number_is_dipped_and_the_answer_cached_for_an_hour() -> None:
    cache, source = Cache(), Source({"12125551234": "13055559999"})
    result = lrn.resolve(NY, cache, source)
    assert (result.lrn, result.source, result.ported) == ("13055559999", "local", True)
    assert cache.data == {"12125551234": "13055559999"} and cache.ttls["12125551234"] == 3600


def test_not_ported_is_cached_too_so_the_next_call_does_not_dip() -> None:
    cache, source = Cache(), Source({})
    assert lrn.resolve(NY, cache, source).ported is False
    again = lrn.resolve(NY, cache, source)
    assert (again.source, again.ported, source.calls) == ("cache", False, ["12125551234"])


def test_cache_hit_answers_without_the_source() -> None:
    source = Source({})
    result = lrn.resolve(NY, Cache({"12125551234": "13055559999"}), source)
    assert (result.lrn, result.source, source.calls) == ("13055559999", "cache", [])


def test_failed_dip_routes_on_the_dialed_number_and_says_why() -> None:
    result = lrn.resolve(NY, Cache(), Source({}, fail=True))
    assert (result.lrn, result.source, result.dipped) == (None, "failed", False)
    assert "timed out" in (result.error or "")


def test_broken_cache_still_dips() -> None:
    result = lrn.resolve(NY, Cache(broken=True), Source({"12125551234": "13055559999"}))
    assert (result.lrn, result.source) == ("13055559999", "local")


@pytest.mark.parametrize("number", ["18005551234", "+442079460000"])
def test_toll_free_and_foreign_numbers_are_not_dipped(number: str) -> None:
    source = Source({})
    assert lrn.resolve(normalise(number), Cache(), source).source == "skipped" and source.calls == []


def test_lrn_equal_to_the_number_means_not_ported() -> None:
    assert lrn.resolve(NY, Cache(), Source({"12125551234": "12125551234"})).ported is False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted(Cache):
    """The shared cache, counting the reads that reach it (each a Redis round trip)."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        super().__init__(data)
        self.gets = 0

    def get(self, tn: str) -> str | None:
        self.gets += 1
        return super().get(tn)


def worker_over(shared: Cache, size: int = 10) -> tuple[lrn_sources.WorkerLrnCache, Clock]:
    clock = Clock()
    return lrn_sources.WorkerLrnCache(shared, size=size, ttl_s=300, clock=clock), clock


def test_a_worker_answers_a_number_it_saw_lately_without_the_shared_cache() -> None:
    shared = Counted({"12125551234": "13055559999"})
    worker, _ = worker_over(shared)
    first = lrn.resolve(NY, worker, Source({}))
    shared.data.clear()  # the shared answer is gone: only the worker's copy can answer now
    again = lrn.resolve(NY, worker, Source({}))
    assert (first.lrn, again.lrn, again.source) == ("13055559999", "13055559999", "cache")
    assert shared.gets == 1


def test_a_worker_asks_the_shared_cache_again_after_its_ttl() -> None:
    shared = Counted({"12125551234": "13055559999"})
    worker, clock = worker_over(shared)
    assert worker.get("12125551234") == "13055559999"
    shared.data["12125551234"] = "13055550000"  # re-ported
    clock.now += 299
    assert worker.get("12125551234") == "13055559999"
    clock.now += 2
    assert worker.get("12125551234") == "13055550000"


def test_a_dip_is_kept_by_the_worker_no_longer_than_the_shared_entry_lives() -> None:
    shared = Counted()
    worker, clock = worker_over(shared)
    src = Source({"12125551234": "13055559999"})
    assert lrn.resolve(NY, worker, src, ttl_s=60).lrn == "13055559999"
    assert shared.data["12125551234"] == "13055559999" and shared.ttls["12125551234"] == 60
    assert lrn.resolve(NY, worker, src).source == "cache"
    shared.data.clear()
    clock.now += 61  # the entry's own 60 s bound the worker's copy, not the worker's 300
    assert lrn.resolve(NY, worker, src).source == "local"
    assert src.calls == ["12125551234", "12125551234"]


def test_a_worker_holds_at_most_size_answers_least_recently_used_out() -> None:
    shared = Counted({f"1212555{n:04d}": lrn.NOT_PORTED for n in range(5)})
    worker, _ = worker_over(shared, size=3)
    for n in (0, 1, 2):
        worker.get(f"1212555{n:04d}")
    worker.get("12125550000")  # used again: 1 is now the oldest
    worker.get("12125550003")  # 1 leaves
    assert len(worker) == 3
    gets = shared.gets
    for n in (0, 2, 3):
        worker.get(f"1212555{n:04d}")
    assert shared.gets == gets  # all three still held
    worker.get("12125550001")
    assert shared.gets == gets + 1  # it had left


def test_a_shared_cache_miss_is_not_remembered_by_the_worker() -> None:
    shared = Counted()
    worker, _ = worker_over(shared)
    assert worker.get("12125551234") is None
    shared.data["12125551234"] = "13055559999"
    assert worker.get("12125551234") == "13055559999"
