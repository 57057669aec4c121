"""Validation of snapshots, and how published snapshots reach a worker (files in a temp dir)."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from routing_engine.adapters.snapshots import SnapshotFollower, SnapshotStore
from routing_engine.domain.validation import problems

from .factories import NOW, World, rate


def valid_world() -> World:
    w = World()
    w.customer("10.0.0.1/32", w.plan("p", [w.vendor("v", [rate("1", "0.01")])]))
    return w


def test_a_sound_configuration_has_no_problems() -> None:
    assert problems(valid_world().snapshot()) == []


def test_a_later_row_for_a_prefix_supersedes_the_earlier_one_without_an_end_date() -> None:
    w = valid_world()
    w.vendor("next", [rate("44", "0.01"), rate("44", "0.02", effective=NOW),
                      rate("44", "0.03", effective=NOW + timedelta(days=30))])  # none of them ends
    assert problems(w.snapshot()) == []


def test_two_rates_of_one_prefix_taking_effect_at_the_same_moment_are_a_conflict() -> None:
    w = valid_world()
    w.vendor("dup", [rate("44", "0.01"), rate("44", "0.02", effective=NOW), rate("44", "0.03", effective=NOW)])
    assert problems(w.snapshot()) == [
        f"vendor dup: two rates for prefix 44 take effect at the same moment {NOW.isoformat()} (0.02 and 0.03)"]


def test_billing_terms_that_cannot_be_billed_are_named() -> None:
    w = valid_world()
    w.vendor("zero", [rate("44", "0.01", billing="0/60/0/0")])
    assert problems(w.snapshot()) == [
        "vendor zero: billing terms 0/60/0/0 for prefix 44 (effective 1970-01-01T00:00:00+00:00) cannot be"
        " billed: increments of 1 s or more, no negative minimum or fee"]


def test_back_to_back_periods_do_not_overlap() -> None:
    w = valid_world()
    w.vendor("ok", [rate("44", "0.01", ends=NOW), rate("44", "0.02", effective=NOW)])
    assert problems(w.snapshot()) == []


def test_negative_rates_empty_plans_and_dangling_references_are_named() -> None:
    w = valid_world()
    w.vendor("neg", [rate("33", "-0.01")])
    empty = w.plan("empty", [])
    ghost = w.plan("ghost", [w.vendor("gone", [rate("1", "0.01")])])
    del w.vendors[next(v for v, x in w.vendors.items() if x.name == "gone")]
    t = w.customer("10.0.0.9/32", empty)
    w.trunks[t] = replace(w.trunks[t], rate_plan_id=ghost)  # a routing plan id is no rate plan
    found = problems(w.snapshot())
    assert "vendor neg: negative rate for prefix 33 (effective 1970-01-01T00:00:00+00:00)" in found
    assert "routing plan empty: has no vendors" in found
    assert any(p.startswith("routing plan ghost: vendor") and "does not exist" in p for p in found)
    assert any(p.startswith("trunk trunk-1") and "rate plan" in p for p in found)


def test_published_snapshots_round_trip_and_roll_back(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    first = valid_world().snapshot()
    second = replace(first, version="second")
    assert store.publish(first) and not store.publish(first)
    assert store.publish(second)
    assert store.current().version == "second" and store.current().previous == first.version  # type: ignore[union-attr]
    assert store.load("second").acl_by_specificity == first.acl_by_specificity
    back = store.rollback()
    assert (back.version, back.previous) == (first.version, "second")


def test_rollback_needs_a_previous_version(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(valid_world().snapshot())
    with pytest.raises(LookupError):
        store.rollback()


def test_old_versions_are_pruned_but_the_previous_one_is_kept(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    base = valid_world().snapshot()
    for n in range(5):
        store.publish(replace(base, version=f"v{n}"))
    assert sorted(p.stem for p in tmp_path.glob("*.snap")) == ["v3", "v4"]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_worker_swaps_to_a_new_publication_at_its_next_check(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    initial = replace(valid_world().snapshot(), version="mine", loaded_at=NOW - timedelta(days=3650))
    clock = Clock()
    follower = SnapshotFollower(store, initial, check_interval_s=0.1, clock=clock)
    assert follower.get().version == "mine"
    store.publish(replace(initial, version="next"))
    assert follower.get().version == "mine"  # not yet time to look
    clock.t = 0.2
    assert follower.get().version == "next"


def test_a_publication_older_than_the_workers_start_is_not_news(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(replace(valid_world().snapshot(), version="stale"))
    fresh = replace(valid_world().snapshot(), version="fresh", loaded_at=NOW + timedelta(days=3650))
    assert SnapshotFollower(store, fresh, clock=Clock()).get().version == "fresh"


def test_an_unreadable_publication_leaves_the_worker_on_its_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    initial = replace(valid_world().snapshot(), version="mine", loaded_at=NOW - timedelta(days=3650))
    follower = SnapshotFollower(store, initial, clock=Clock())
    store.publish(replace(initial, version="broken"))
    (tmp_path / "broken.snap").write_bytes(b"not a snapshot")
    assert follower.get().version == "mine"


def test_a_version_whose_file_is_missing_is_written_again(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    snapshot = valid_world().snapshot()
    store.publish(snapshot)
    store.path(snapshot.version).rename(tmp_path / f"{snapshot.version}.pickle")  # e.g. an older format
    assert store.publish(snapshot)
    assert store.load(snapshot.version).version == snapshot.version
    assert not list(tmp_path.glob("*.pickle"))


# ------------------------------------------------------------------ format versions

def _rewrite_header(path: Path, *, layout: bytes | None = None, schema: str | None = None) -> None:
    import struct

    from routing_engine.adapters import packed

    data = bytearray(path.read_bytes())
    magic, old_layout, old_schema, toc = struct.unpack_from("<8s16s64sQ", data, 0)
    struct.pack_into("<8s16s64sQ", data, 0, magic, layout or old_layout,
                     (schema.encode() if schema is not None else old_schema), toc)
    path.write_bytes(bytes(data))
    assert packed.header(bytes(data))[0] == (layout or old_layout)


def test_a_file_written_by_another_code_version_is_refused_never_misread(tmp_path: Path) -> None:
    from routing_engine.adapters import packed

    store = SnapshotStore(tmp_path)
    snapshot = valid_world().snapshot()
    store.publish(snapshot)
    _rewrite_header(store.path(snapshot.version), layout=b"\x01" * 16)
    assert "another version of the code" in (store.readable(snapshot.version) or "")
    with pytest.raises(packed.FormatMismatch, match="format 0101"):
        store.load(snapshot.version)
    # publishing the same version again rewrites the file in this code's format
    assert store.publish(snapshot)
    assert store.readable(snapshot.version) is None
    assert store.load(snapshot.version).version == snapshot.version


def test_a_file_built_from_another_schema_is_refused(tmp_path: Path) -> None:
    from routing_engine.adapters import packed

    store = SnapshotStore(tmp_path)
    snapshot = valid_world().snapshot()
    store.publish(snapshot)
    _rewrite_header(store.path(snapshot.version), schema="0001_schemas_and_core_tables")
    assert "built from schema 0001_schemas_and_core_tables" in (store.readable(snapshot.version) or "")
    with pytest.raises(packed.FormatMismatch):
        store.load(snapshot.version)


def test_the_format_id_follows_the_snapshot_classes_fields() -> None:
    import dataclasses

    from routing_engine.adapters import packed
    from routing_engine.domain import snapshot

    before = packed._layout()
    original = snapshot.Credential

    @dataclasses.dataclass(frozen=True, slots=True)
    class Credential:  # the same class with one more field
        username: str
        trunk_id: object
        ha1: str
        extra: int = 0

    snapshot.Credential = Credential  # type: ignore[misc]
    try:
        assert packed._layout() != before
    finally:
        snapshot.Credential = original  # type: ignore[misc]
    assert packed._layout() == before == packed.LAYOUT


def test_an_old_magic_is_refused_with_its_reason() -> None:
    from routing_engine.adapters import packed

    with pytest.raises(packed.FormatMismatch, match="WARPSNP1"):
        packed.read(b"WARPSNP1" + b"\0" * 200)
