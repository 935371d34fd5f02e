"""The binary COPY encoder (service/kit/_pg_copy.pyx) against its pure-Python reference
(service/kit/pg_copy.py): the same bytes for the same rows, the same error for the same bad
value. tests/integration/test_pg_copy.py holds the reference to what PostgreSQL reads."""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.kit import _pg_copy as compiled
from service.kit import pg_copy as reference

Encoder = Callable[[list[tuple[Any, ...]], str], bytes]
ENCODERS: list[Encoder] = [compiled.encode_rows, reference.encode_rows]
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")  # a zone whose offset changes (DST)


class Kind(enum.StrEnum):
    PAYMENT = "payment"


def _zones() -> st.SearchStrategy[dt.tzinfo]:
    fixed = st.integers(-23 * 60, 23 * 60).map(
        lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
    return st.one_of(st.just(dt.UTC), fixed, st.sampled_from([SHANGHAI, NEW_YORK]))


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "t": st.one_of(st.text(), st.just(Kind.PAYMENT)),
    # naive bounds are hypothesis's way of saying "then attach one of these zones"
    "z": st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30),  # noqa: DTZ001
                      timezones=_zones()),
    "i": st.integers(-(2**31), 2**31 - 1),
    "b": st.booleans(),
    "y": st.binary(),
    "j": st.binary(),
    "J": st.binary(),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]]]:
    kinds = draw(st.text(alphabet=reference.KINDS, min_size=1, max_size=12))
    row = st.tuples(*[st.one_of(st.none(), VALUES[kind]) for kind in kinds])
    return kinds, draw(st.lists(row, max_size=20))


@settings(max_examples=300, deadline=None)
@given(tables())
def test_the_compiled_encoder_writes_the_references_bytes(
    table: tuple[str, list[tuple[Any, ...]]],
) -> None:
    kinds, rows = table
    assert compiled.encode_rows(rows, kinds) == reference.encode_rows(rows, kinds)


def test_a_payload_is_header_rows_and_trailer() -> None:
    moment = dt.datetime(2000, 1, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    payload = compiled.encode_rows([("ab", moment, 7, True, None)], "tzibj")
    assert payload == (b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\x00\x05"
                       + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x08" + bytes(8)
                       + b"\x00\x00\x00\x04\x00\x00\x00\x07" + b"\x00\x00\x00\x01\x01"
                       + b"\xff\xff\xff\xff" + b"\xff\xff")


class AwareNever(dt.tzinfo):
    """A tzinfo that does not know its offset: as good as naive."""

    def utcoffset(self, _: dt.datetime | None) -> None:
        return None

    def dst(self, _: dt.datetime | None) -> None:
        return None

    def tzname(self, _: dt.datetime | None) -> str:
        return "nowhere"


BAD: list[tuple[str, Any, type[Exception]]] = [
    ("t", 1, TypeError),
    ("t", b"x", TypeError),
    ("t", "\ud800", UnicodeEncodeError),
    ("z", dt.datetime(2025, 5, 1), ValueError),  # noqa: DTZ001 (naive on purpose)
    ("z", dt.datetime(2025, 5, 1, tzinfo=AwareNever()), ValueError),
    ("z", dt.date(2025, 5, 1), TypeError),
    ("z", "2025-05-01T00:00:00Z", TypeError),
    ("i", 2**31, OverflowError),
    ("i", -(2**31) - 1, OverflowError),
    ("i", 2**70, OverflowError),
    ("i", True, TypeError),
    ("i", 1.0, TypeError),
    ("b", 1, TypeError),
    ("y", "x", TypeError),
    ("y", bytearray(b"x"), TypeError),
    ("j", "{}", TypeError),
    ("J", "{}", TypeError),
]


@pytest.mark.parametrize("encode", ENCODERS)
@pytest.mark.parametrize(("kind", "value", "error"), BAD)
def test_a_value_of_the_wrong_kind_is_refused_in_words(
    encode: Encoder, kind: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode([(value,)], kind)


@pytest.mark.parametrize("encode", ENCODERS)
def test_a_row_of_the_wrong_width_and_an_unknown_kind_are_refused(encode: Encoder) -> None:
    with pytest.raises(ValueError, match="a row of 1 values for 2 columns"):
        encode([("a",)], "tt")
    with pytest.raises(ValueError, match="unknown column kind"):
        encode([("a",)], "x")


def test_the_same_bad_value_gets_the_same_words_from_both() -> None:
    for kind, value, error in BAD:
        messages = []
        for encode in ENCODERS:
            with pytest.raises(error) as raised:
                encode([(value,)], kind)
            messages.append(str(raised.value))
        assert messages[0] == messages[1], (kind, value)


def test_a_table_names_as_many_kinds_as_columns() -> None:
    with pytest.raises(ValueError, match="2 columns, 1 kinds"):
        reference.CopyTable("t", ("a", "b"), "t")
    with pytest.raises(ValueError, match="unknown column kind"):
        reference.CopyTable("t", ("a",), "q")


def test_json_goes_as_it_came_and_jsonb_after_its_version_byte() -> None:
    body = compiled.encode_rows([(b"{}", b"{}")], "jJ")[len(reference.HEADER) + 2 : -2]
    assert body == b"\x00\x00\x00\x02{}" + b"\x00\x00\x00\x03\x01{}"
