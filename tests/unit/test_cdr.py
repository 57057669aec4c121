import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from routing_engine.domain.cdr import CdrRecord, billable_duration

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_record_survives_the_trip_through_a_stream_entry() -> None:
    record = CdrRecord(
        cdr_id=uuid.uuid4(), call_id="abc@host", node="n1", invite_at=T0, sip_code=200,
        sip_reason="OK", account_id=uuid.uuid4(), trunk_id=uuid.uuid4(), provider_id=uuid.uuid4(),
        gateway="gw1", from_raw="13055550100", to_raw="12125551234", from_e164="+13055550100",
        to_e164="+12125551234", answer_at=T0 + timedelta(seconds=2), end_at=T0 + timedelta(seconds=32),
        duration_s=30, vendor_rate=Decimal("0.012345"), trace='{"plan":"p"}',
    )
    assert CdrRecord.from_fields(record.to_fields()) == record


def test_an_entry_says_whether_the_node_freed_the_call_s_places_with_it() -> None:
    record = CdrRecord(cdr_id=uuid.uuid4(), call_id="x", node="n", invite_at=T0, sip_code=200, released=True)
    assert record.to_fields()["released"] == "True" and CdrRecord.from_fields(record.to_fields()).released
    unsaid = record.to_fields()
    del unsaid["released"]  # an entry written before the field existed: the emitter frees its places
    assert CdrRecord.from_fields(unsaid).released is False


def test_absent_optional_fields_are_left_out_of_the_entry() -> None:
    record = CdrRecord(cdr_id=uuid.uuid4(), call_id="x", node="n", invite_at=T0, sip_code=403)
    assert "answer_at" not in record.to_fields()
    assert CdrRecord.from_fields(record.to_fields()).answer_at is None


@pytest.mark.parametrize("field, value", [("sip_code", "abc"), ("invite_at", "yesterday"),
                                          ("cdr_id", "nope"), ("vendor_rate", "1.2.3"),
                                          ("invite_at", "2026-11-22T12:00:00"), ("released", "yes"),
                                          ("settle", "1")])
def test_unreadable_field_is_named_in_the_error(field: str, value: str) -> None:
    data = CdrRecord(cdr_id=uuid.uuid4(), call_id="x", node="n", invite_at=T0, sip_code=200).to_fields()
    data[field] = value
    with pytest.raises(ValueError, match=field):
        CdrRecord.from_fields(data)


def test_entry_missing_a_required_field_is_refused() -> None:
    with pytest.raises(ValueError, match="call_id"):
        CdrRecord.from_fields({"cdr_id": str(uuid.uuid4()), "node": "n",
                               "invite_at": T0.isoformat(), "sip_code": "200"})


@pytest.mark.parametrize("seconds, expected", [(0, 0), (0.001, 1), (1.0, 1), (29.2, 30), (60, 60)])
def test_a_started_second_counts_as_a_whole_one(seconds: float, expected: int) -> None:
    assert billable_duration(T0, T0 + timedelta(seconds=seconds)) == expected


def test_unanswered_call_has_no_duration() -> None:
    assert billable_duration(None, T0) == 0
    assert billable_duration(T0, None) == 0
