import pytest

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
