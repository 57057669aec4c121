"""Which daily CDR partitions the retention drops."""

from datetime import date

from routing_engine.domain.cdr import partitions_to_drop

NAMES = ["cdrs_default", "cdrs_20261113", "cdrs_20261114", "cdrs_20261115", "cdrs_20261121", "cdrs_20261122",
         "cdrs_20261123"]


def test_partitions_whose_whole_day_is_older_than_the_retention_are_dropped() -> None:
    assert partitions_to_drop(NAMES, date(2026, 11, 22), 7) == ["cdrs_20261113", "cdrs_20261114"]


def test_the_default_partition_and_future_days_are_never_dropped() -> None:
    assert partitions_to_drop(NAMES, date(2026, 11, 22), 0) == [
        "cdrs_20261113", "cdrs_20261114", "cdrs_20261115", "cdrs_20261121"]


def test_names_that_are_not_daily_partitions_are_left_alone() -> None:
    assert partitions_to_drop(["cdrs_2026111", "cdrs_20261399", "other_20260101"], date(2026, 11, 22), 1) == []


def test_month_and_year_boundaries() -> None:
    assert partitions_to_drop(["cdrs_20261225", "cdrs_20261226"], date(2027, 1, 2), 7) == ["cdrs_20261225"]
