"""Go-live and exemption rules at their exact boundaries, in UTC, +08:00 and naive input."""

from __future__ import annotations

import datetime as dt

import pytest

from service.policy.schemas import InstitutionPolicy, NoCodeReason, PolicyConfig
from service.policy.service import (
    SettledAtError,
    exemption_accepted,
    go_live_instant,
    is_enforced,
    parse_settled_at,
)
from service.settings import DEFAULT_GO_LIVE, InstitutionKind

CONFIG = PolicyConfig(go_live=dict(DEFAULT_GO_LIVE))

# (kind, last instant before go-live, first enforced instant) in three spellings each.
BOUNDARIES = [
    (InstitutionKind.RETAIL_PHARMACY, "2025-03-31", "2025-04-01"),
    (InstitutionKind.PRIMARY, "2025-04-30", "2025-05-01"),
    (InstitutionKind.SECONDARY, "2025-05-31", "2025-06-01"),
    (InstitutionKind.TERTIARY, "2025-05-31", "2025-06-01"),
]


def _inst(kind: InstitutionKind, override: dt.date | None = None) -> InstitutionPolicy:
    return InstitutionPolicy("H00000000001", kind, override)


@pytest.mark.parametrize(("kind", "day_before", "go_live_day"), BOUNDARIES)
def test_go_live_boundary_in_every_spelling(
    kind: InstitutionKind, day_before: str, go_live_day: str
) -> None:
    inst = _inst(kind)
    before = [
        f"{day_before} 23:59:59",
        f"{day_before}T23:59:59+08:00",
        f"{day_before}T15:59:59Z",
        f"{day_before}T15:59:59.999999+00:00",
    ]
    at_or_after = [
        f"{go_live_day} 00:00:00",
        f"{go_live_day}T00:00:00+08:00",
        f"{day_before}T16:00:00Z",
        f"{day_before}T16:00:00+00:00",
        f"{day_before}T11:00:00-05:00",
    ]
    assert not any(is_enforced(inst, parse_settled_at(t), CONFIG) for t in before)
    assert all(is_enforced(inst, parse_settled_at(t), CONFIG) for t in at_or_after)


def test_go_live_is_shanghai_midnight() -> None:
    instant = go_live_instant(_inst(InstitutionKind.RETAIL_PHARMACY), CONFIG)
    assert instant == dt.datetime(2025, 3, 31, 16, 0, tzinfo=dt.UTC)


def test_record_override_beats_configured_override_beats_kind() -> None:
    config = PolicyConfig(
        go_live=dict(DEFAULT_GO_LIVE), go_live_overrides={"H00000000001": dt.date(2025, 9, 1)}
    )
    inst = _inst(InstitutionKind.RETAIL_PHARMACY)
    assert not is_enforced(inst, parse_settled_at("2025-08-31 23:59:59"), config)
    assert is_enforced(inst, parse_settled_at("2025-09-01 00:00:00"), config)
    record = _inst(InstitutionKind.RETAIL_PHARMACY, dt.date(2025, 10, 1))
    assert not is_enforced(record, parse_settled_at("2025-09-30 23:59:59"), config)
    assert is_enforced(record, parse_settled_at("2025-10-01 00:00:00"), config)


@pytest.mark.parametrize(
    "reason",
    [NoCodeReason.HERBAL_PIECES, NoCodeReason.HERBAL_GRANULES, NoCodeReason.INPATIENT_SPLIT],
)
def test_permanent_exemptions(reason: NoCodeReason) -> None:
    assert exemption_accepted(reason, parse_settled_at("2030-01-01 00:00:00"), CONFIG)


def test_legacy_stock_sunset_is_exclusive_local_midnight() -> None:
    legacy = NoCodeReason.LEGACY_STOCK
    assert exemption_accepted(legacy, parse_settled_at("2025-12-31 23:59:59"), CONFIG)
    assert exemption_accepted(legacy, parse_settled_at("2025-12-31T15:59:59Z"), CONFIG)
    assert not exemption_accepted(legacy, parse_settled_at("2026-01-01 00:00:00"), CONFIG)
    assert not exemption_accepted(legacy, parse_settled_at("2025-12-31T16:00:00Z"), CONFIG)


def test_legacy_stock_sunset_is_configurable() -> None:
    config = PolicyConfig(go_live=dict(DEFAULT_GO_LIVE), legacy_stock_sunset=dt.date(2027, 1, 1))
    at = parse_settled_at("2026-06-01 00:00:00")
    assert exemption_accepted(NoCodeReason.LEGACY_STOCK, at, config)


def test_naive_insurer_format_is_shanghai_time() -> None:
    parsed = parse_settled_at("2025-04-02 10:15:00")
    assert parsed == dt.datetime(2025, 4, 2, 2, 15, tzinfo=dt.UTC)


def test_nanosecond_fraction_is_accepted() -> None:
    parsed = parse_settled_at("2025-04-02T10:15:00.123456789+08:00")
    assert parsed.microsecond == 123456


@pytest.mark.parametrize(
    "text",
    [
        "2025-04-02T10:15:00",  # RFC 3339 needs an offset
        "2025-02-30 10:00:00",
        "2025-04-02",
        "yesterday",
        "",
        "2025-04-02 25:00:00",
        "2025-04-02T10:15:00+8",
    ],
)
def test_unreadable_settled_at_is_refused(text: str) -> None:
    with pytest.raises(SettledAtError):
        parse_settled_at(text)


@pytest.mark.parametrize("text", [
    "2000-01-01 00:00:00", "2099-12-31 23:59:59", "2000-01-01T00:00:00+14:00",
    "2099-12-31T23:00:00-05:00",  # 2100 in UTC: its year as written is what is judged
])
def test_settled_at_years_2000_to_2099_as_written_are_plausible(text: str) -> None:
    assert 2000 <= parse_settled_at(text).year <= 2099


@pytest.mark.parametrize("text", [
    "1999-12-31 23:59:59", "2100-01-01 00:00:00", "1999-12-31T23:00:00-05:00",
    "0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-10:00",
])
def test_settled_at_outside_2000_to_2099_as_written_is_refused_in_words(text: str) -> None:
    with pytest.raises(SettledAtError, match="outside 2000-2099"):
        parse_settled_at(text)
