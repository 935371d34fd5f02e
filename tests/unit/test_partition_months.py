"""How far ahead code_events' monthly partitions reach, from their names (pure)."""

from __future__ import annotations

import datetime as dt

from service.records.partitions import months_ahead


def _names(*months: str) -> list[str]:
    return [f"code_events_y{month.replace('-', 'm')}" for month in months]


def test_counts_consecutive_months_after_the_current_one() -> None:
    names = _names("2026-11", "2026-12", "2027-01", "2027-02") + ["code_events_default"]
    assert months_ahead(names, dt.date(2026, 12, 31)) == 2
    assert months_ahead(names, dt.date(2027, 2, 1)) == 0


def test_a_gap_ends_the_count() -> None:
    assert months_ahead(_names("2027-01", "2027-02", "2027-04"), dt.date(2027, 1, 5)) == 1


def test_no_partition_for_this_month_is_minus_one() -> None:
    assert months_ahead(_names("2027-02"), dt.date(2027, 1, 5)) == -1
