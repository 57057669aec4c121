"""The emitter's batching and acknowledgement rules, with in-memory stream and sink."""

import uuid
from datetime import UTC, datetime

from routing_engine import metrics
from routing_engine.companion.emitter import Emitter, RecordsRefused, Sink, Stream
from routing_engine.domain.cdr import CdrRecord

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def entry(n: int) -> tuple[str, dict[str, str]]:
    record = CdrRecord(cdr_id=uuid.uuid4(), call_id=f"call-{n}", node="n", invite_at=T0, sip_code=200)
    return f"{n}-0", record.to_fields()


class MemoryStream(Stream):
    def __init__(self, pending: list, new: list) -> None:
        self.pending, self.new = list(pending), list(new)
        self.acked: list[str] = []
        self.dead: list[str] = []
        self.reasons: dict[str, str] = {}

    def read_pending(self, consumer: str, count: int) -> list:
        out = [e for e in self.pending if e[0] not in self.acked][:count]
        return out

    def read_new(self, consumer: str, count: int, block_ms: int) -> list:
        out, self.new = self.new[:count], self.new[count:]
        return out

    def ack(self, entry_ids: list[str]) -> None:
        self.acked.extend(entry_ids)

    def dead_letter(self, entry_id: str, data: dict[str, str], error: str) -> None:
        self.dead.append(entry_id)
        self.reasons[entry_id] = error


class MemorySink(Sink):
    def __init__(self, fail_times: int = 0) -> None:
        self.rows: list[CdrRecord] = []
        self.batches: list[int] = []
        self.fail_times = fail_times

    def write(self, records: list[CdrRecord]) -> int:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("postgres down")
        self.rows.extend(records)
        self.batches.append(len(records))
        return len(records)


def run(emitter: Emitter, rounds: int) -> None:
    calls = iter(range(rounds))
    emitter.run(lambda: next(calls, None) is None)


def test_full_batches_are_written_and_then_acknowledged() -> None:
    stream = MemoryStream([], [entry(i) for i in range(5)])
    sink = MemorySink()
    run(Emitter(stream, sink, "c", batch_size=2, batch_seconds=60), rounds=6)
    assert sink.batches == [2, 2, 1]  # the last, partial batch is flushed on stop
    assert stream.acked == [f"{i}-0" for i in range(5)]


def test_partial_batch_is_written_when_its_time_is_up() -> None:
    stream = MemoryStream([], [entry(1)])
    sink = MemorySink()
    clock = iter([0.0, 0.0, 0.0, 11.0, 11.0, 11.0, 11.0])
    emitter = Emitter(stream, sink, "c", batch_size=500, batch_seconds=10, clock=lambda: next(clock))
    run(emitter, rounds=2)
    assert sink.batches == [1]


def test_nothing_is_acknowledged_while_the_sink_fails() -> None:
    stream = MemoryStream([], [entry(1)])
    sink = MemorySink(fail_times=1)
    emitter = Emitter(stream, sink, "c", batch_size=1, batch_seconds=60, min_backoff_s=0.001)
    acked_during_failure: list[list[str]] = []
    original = sink.write

    def write(records: list[CdrRecord]) -> int:
        acked_during_failure.append(list(stream.acked))
        return original(records)

    sink.write = write  # type: ignore[method-assign]
    emitter.run(lambda: bool(stream.acked))
    assert len(acked_during_failure) == 2
    assert acked_during_failure[0] == []  # first (failed) attempt: nothing acknowledged
    assert stream.acked == ["1-0"] and len(sink.rows) == 1


def test_entries_left_unacknowledged_by_a_crash_are_written_first() -> None:
    stream = MemoryStream([entry(1), entry(2)], [entry(3)])
    sink = MemorySink()
    run(Emitter(stream, sink, "c", batch_size=10, batch_seconds=60), rounds=4)
    assert [r.call_id for r in sink.rows] == ["call-1", "call-2", "call-3"]


def test_unreadable_entry_goes_to_dead_letters_and_does_not_block_the_batch() -> None:
    bad = ("9-0", {"cdr_id": "x"})
    stream = MemoryStream([], [entry(1), bad, entry(2)])
    sink = MemorySink()
    run(Emitter(stream, sink, "c", batch_size=3, batch_seconds=60), rounds=2)
    assert stream.dead == ["9-0"]
    assert [r.call_id for r in sink.rows] == ["call-1", "call-2"]
    assert sorted(stream.acked) == ["1-0", "2-0", "9-0"]


class FlakyStream(MemoryStream):
    """Redis goes away for a while: reads fail, then the group has to be created again."""

    def __init__(self, new: list, failures: int) -> None:
        super().__init__([], new)
        self.failures = failures
        self.groups_created = 0

    def read_new(self, consumer: str, count: int, block_ms: int) -> list:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Redis down")
        return super().read_new(consumer, count, block_ms)

    def ensure_group(self) -> None:
        self.groups_created += 1


def test_an_unreadable_stream_is_waited_out_and_the_group_recreated() -> None:
    stream = FlakyStream([entry(1)], failures=2)
    sink = MemorySink()
    Emitter(stream, sink, "c", batch_size=1, batch_seconds=60, min_backoff_s=0.001).run(lambda: bool(stream.acked))
    assert stream.groups_created == 2 and [r.call_id for r in sink.rows] == ["call-1"]


class PickySink(MemorySink):
    """Refuses, as Postgres does, every batch holding a record it cannot store."""

    def __init__(self, poisoned: set[str]) -> None:
        super().__init__()
        self.poisoned = poisoned
        self.attempts = 0

    def write(self, records: list[CdrRecord]) -> int:
        self.attempts += 1
        bad = [r.call_id for r in records if r.call_id in self.poisoned]
        if bad:
            raise RecordsRefused(f"cannot store {bad[0]}")
        return super().write(records)


def dead_letters(sink: str, reason: str) -> float:
    return metrics.DEAD_LETTERS.labels(sink, reason)._value.get()


def test_a_refused_record_goes_to_dead_letters_and_the_rest_of_its_batch_is_written() -> None:
    stream = MemoryStream([], [entry(i) for i in range(7)])
    sink = PickySink({"call-3"})
    before = dead_letters("sink", "refused")
    run(Emitter(stream, sink, "c", batch_size=7, batch_seconds=60), rounds=2)
    assert sorted(r.call_id for r in sink.rows) == [f"call-{i}" for i in range(7) if i != 3]
    assert stream.dead == ["3-0"] and "cannot store call-3" in stream.reasons["3-0"]
    assert sorted(stream.acked) == sorted(f"{i}-0" for i in range(7))
    assert dead_letters("sink", "refused") == before + 1


def test_several_refused_records_are_each_dead_lettered_and_nothing_else_is_lost() -> None:
    stream = MemoryStream([], [entry(i) for i in range(16)])
    sink = PickySink({"call-0", "call-9", "call-15"})
    run(Emitter(stream, sink, "c", batch_size=16, batch_seconds=60), rounds=2)
    assert sorted(stream.dead) == ["0-0", "15-0", "9-0"]
    assert len(sink.rows) == 13 and len(stream.acked) == 16


def test_a_refused_record_left_pending_by_a_crash_no_longer_blocks_the_next_start() -> None:
    stream = MemoryStream([entry(1), entry(2)], [entry(3)])
    sink = PickySink({"call-1"})
    run(Emitter(stream, sink, "c", batch_size=10, batch_seconds=60), rounds=4)
    assert [r.call_id for r in sink.rows] == ["call-2", "call-3"] and stream.dead == ["1-0"]


def test_a_sink_outage_is_not_taken_for_a_bad_record() -> None:
    stream = MemoryStream([], [entry(1), entry(2)])
    sink = MemorySink(fail_times=2)
    emitter = Emitter(stream, sink, "c", batch_size=2, batch_seconds=60, min_backoff_s=0.001)
    emitter.run(lambda: len(stream.acked) == 2)
    assert stream.dead == [] and sink.batches == [2]  # retried whole, never split
