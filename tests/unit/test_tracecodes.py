"""Trace-code parsing (CONTRACT §1): the contract's examples, every invalid case with its reason,
and properties over generated packs in every spelling and over random junk."""

from __future__ import annotations

import calendar
import datetime as dt
import re
import string
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.tracecodes import (
    InvalidTraceCode,
    ParsedTraceCode,
    TraceCodeFormat,
    gtin_check_digit,
    parse_trace_code,
)

GS = "\x1d"
SET_82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
GTIN = "06901234567892"  # the contract's example; check digit 2
CONTRACT_CANONICAL = "010690123456789221ABC123"
FAST = settings(max_examples=150, deadline=None)


def _parsed(text: str) -> ParsedTraceCode:
    result = parse_trace_code(text)
    assert isinstance(result, ParsedTraceCode), result
    return result


def _reason(text: str) -> str:
    result = parse_trace_code(text)
    assert isinstance(result, InvalidTraceCode), result
    assert result.text == text
    return result.reason


# --- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "(01)06901234567892(21)ABC123(17)270131(10)L01",
        "010690123456789221ABC123\x1d1727013110L01",
        "]d2(01)06901234567892(21)ABC123(17)270131(10)L01",
        "]d2010690123456789221ABC123\x1d1727013110L01",
        "010690123456789221ABC123\x1d1727013110L01\x1d\r\n",  # trailing GS, scanner CR/LF
        "\x1d010690123456789221ABC123\x1d1727013110L01",  # leading FNC1 sent as GS
        "(10)L01(17)270131(21)ABC123(01)06901234567892",
        "10L01\x1d21ABC123\x1d172701310106901234567892",
        "17270131010690123456789221ABC123\x1d10L01",
        "01069012345678921727013110L01\x1d21ABC123",
        "0106901234567892\x1d21ABC123\x1d17270131\x1d10L01",  # superfluous GS after fixed fields
        "  (01)06901234567892(21)ABC123(17)270131(10)L01\t\r\n",
    ],
)
def test_contract_gs1_example_in_every_spelling(text: str) -> None:
    parsed = _parsed(text)
    assert parsed.text == text
    assert parsed.format is TraceCodeFormat.GS1
    assert parsed.canonical == CONTRACT_CANONICAL
    assert parsed.product_id == GTIN
    assert parsed.special_control is False
    assert parsed.expiry == dt.date(2027, 1, 31)
    assert parsed.batch == "L01"


def test_gs1_without_optional_ais_needs_no_gs() -> None:
    parsed = _parsed("17270131010690123456789221ABC123")
    assert (parsed.canonical, parsed.expiry, parsed.batch) == (
        CONTRACT_CANONICAL,
        dt.date(2027, 1, 31),
        None,
    )
    assert _parsed("010690123456789221ABC123").expiry is None


def test_gs1_serial_is_case_sensitive() -> None:
    assert _parsed("(01)06901234567892(21)abc123").canonical == "010690123456789221abc123"


@pytest.mark.parametrize(
    ("yymmdd", "expiry"),
    [
        ("240200", dt.date(2024, 2, 29)),
        ("250200", dt.date(2025, 2, 28)),
        ("271200", dt.date(2027, 12, 31)),
        ("270400", dt.date(2027, 4, 30)),
        ("991231", dt.date(2099, 12, 31)),
        ("000101", dt.date(2000, 1, 1)),
    ],
)
def test_gs1_expiry_day_00_is_end_of_month(yymmdd: str, expiry: dt.date) -> None:
    assert _parsed(f"(01){GTIN}(21)ABC123(17){yymmdd}").expiry == expiry


@pytest.mark.parametrize(
    ("text", "canonical", "special_control"),
    [
        ("81234560000000000011", "81234560000000000011", False),
        ("81234570000000000035\r\n", "81234570000000000035", False),
        (" 89123450000000000011 ", "89123450000000000011", True),
    ],
)
def test_cn20(text: str, canonical: str, special_control: bool) -> None:
    parsed = _parsed(text)
    assert parsed.format is TraceCodeFormat.CN20
    assert parsed.canonical == canonical
    assert parsed.product_id == canonical[:7]
    assert parsed.special_control is special_control
    assert (parsed.expiry, parsed.batch) == (None, None)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ABCDEFGHIJ", "ABCDEFGHIJ"),
        ("abcDEF1234xyz\r\n", "ABCDEF1234XYZ"),
        ("1234567890123456789", "1234567890123456789"),  # 19 digits: not a cn20 attempt
        ("8" * 21, "8" * 21),
        ("Z" * 40, "Z" * 40),
        ("0106901234", "0106901234"),  # too short to carry a GTIN
    ],
)
def test_mfr(text: str, canonical: str) -> None:
    parsed = _parsed(text)
    assert parsed.format is TraceCodeFormat.MFR
    assert parsed.canonical == canonical
    assert (parsed.product_id, parsed.special_control) == (None, False)


def test_the_one_gs1_pack_that_spells_as_20_digits_stays_gs1() -> None:
    # 01 + GTIN + 21 + a 2-digit serial; its other spellings must be the same code.
    raw = f"01{GTIN}2112"
    assert _parsed(raw).format is TraceCodeFormat.GS1
    assert _parsed(raw).canonical == _parsed(f"(01){GTIN}(21)12").canonical == raw


@pytest.mark.parametrize(
    ("first13", "check"),
    [("0690123456789", 2), ("0400638133393", 1), ("0000000000000", 0), ("1234567890123", 1)],
)
def test_gtin_check_digit(first13: str, check: int) -> None:
    assert gtin_check_digit(first13) == check


@pytest.mark.parametrize("bad", ["", "069012345678", "06901234567892", "069012345678X", "０" * 13])
def test_gtin_check_digit_needs_13_ascii_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="13 digits"):
        gtin_check_digit(bad)


INVALID = [
    ("", "empty trace code"),
    (" \r\n\t", "empty trace code"),
    ("71234560000000000011", "20-digit code must start with 8"),
    ("01234567890123456789", "20-digit code must start with 8"),
    (f"01{GTIN[:-1]}32112", "20-digit code must start with 8"),
    ("(01)06901234567893(21)ABC123", "GTIN check digit is 3, expected 2"),
    ("010690123456789321ABC123\x1d1727013110L01", "GTIN check digit is 3, expected 2"),
    ("(01)0690123456789(21)ABC123", "AI 01 (GTIN) must be 14 digits, got '0690123456789'"),
    ("0112345\x1d21ABC123", "AI 01 (GTIN) must be 14 digits, got '12345'"),
    (f"(01){GTIN}(17)270131", "missing AI 21 (serial)"),
    (f"01{GTIN}", "missing AI 21 (serial)"),
    (f"1727013101{GTIN}\r\n", "missing AI 21 (serial)"),
    ("(21)ABC123(17)270131", "missing AI 01 (GTIN)"),
    ("21ABC123\x1d10L01", "missing AI 01 (GTIN)"),
    (f"(01){GTIN}(21)ABC123(99)X", "unknown AI 99 at position 30"),
    (f"01{GTIN}21ABC123\x1d99X", "unknown AI 99 at position 26"),
    (f"]d201{GTIN}21ABC123\x1d240X", "unknown AI 240 at position 29"),
    (f"01{GTIN}3103000123", "unknown AI 3103 at position 17"),
    (f"(01){GTIN}(21)ABC123(17)270231", "AI 17 date 270231 does not exist"),
    (f"(01){GTIN}(21)ABC123(17)271301", "AI 17 date 271301 does not exist"),
    (f"(01){GTIN}(21)ABC123(17)270031", "AI 17 date 270031 does not exist"),
    (f"(01){GTIN}(21)ABC123(17)250229", "AI 17 date 250229 does not exist"),
    (f"(01){GTIN}(21)ABC123(17)2701", "AI 17 (expiry) must be 6 digits YYMMDD, got '2701'"),
    (f"(01){GTIN}(21)AB~C", "serial contains character '~' outside GS1 set 82"),
    (f"(01){GTIN}(21)AB#C", "serial contains character '#' outside GS1 set 82"),
    (f"(01){GTIN}(21)ABC\x1d(10)L01", "serial contains character '\\x1d' outside GS1 set 82"),
    (f"(01){GTIN}(21)ABC123(10)L 01", "batch contains character ' ' outside GS1 set 82"),
    (f"(01){GTIN}(21)", "serial is empty"),
    (f"(01){GTIN}(21)ABC123(10)", "batch is empty"),
    (f"(01){GTIN}(21){'A' * 21}", "serial is 21 characters long, at most 20 allowed"),
    (f"01{GTIN}21ABC123\x1d10{'B' * 25}", "batch is 25 characters long, at most 20 allowed"),
    (f"(01){GTIN}(21)A(21)B", "AI 21 (serial) given twice, again at position 25"),
    (f"01{GTIN}21A\x1d01{GTIN}", "AI 01 (GTIN) given twice, again at position 21"),
    ("]d2", "GS1 element string is empty"),
    ("\x1d\x1d", "GS1 element string is empty"),
    (f"]d2X01{GTIN}21A", "expected a GS1 AI at position 4, found 'X0'"),
    (f"01{GTIN}21A\x1d\x1d10L01", "expected a GS1 AI at position 21, found '\\x1d1'"),
    (f"({GTIN}", "expected an AI in parentheses at position 1, e.g. (01)"),
    ("abcdefghi", "length 9 is not a trace code (mfr codes are 10-40 characters)"),
    ("A" * 41, "length 41 is not a trace code (mfr codes are 10-40 characters)"),
    (
        "ABCDE-12345",
        "character '-' at position 6 is not allowed (mfr codes are letters A-Z and digits 0-9)",
    ),
    (
        "ABCDE 12345",
        "character ' ' at position 6 is not allowed (mfr codes are letters A-Z and digits 0-9)",
    ),
    # Full-width digits look like a cn20 but are not ASCII.
    (
        "８１２３４５６００００００００００００１１",
        "character '８' at position 1 is not allowed (mfr codes are letters A-Z and digits 0-9)",
    ),
    # Upper-casing these would yield A-Z ("ı" -> "I") or change the length ("ß" -> "SS").
    (
        "ı" * 10,
        "character 'ı' at position 1 is not allowed (mfr codes are letters A-Z and digits 0-9)",
    ),
    ("ß" * 5, "length 5 is not a trace code (mfr codes are 10-40 characters)"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_with_reason(text: str, reason: str) -> None:
    assert _reason(text) == reason


# --- generated packs and spellings --------------------------------------------------------------


@dataclass(frozen=True)
class Pack:
    gtin: str
    serial: str
    expiry: str | None  # YYMMDD as encoded
    batch: str | None

    @property
    def canonical(self) -> str:
        return f"01{self.gtin}21{self.serial}"

    def elements(self) -> list[tuple[str, str]]:
        optional = [("17", self.expiry), ("10", self.batch)]
        return [("01", self.gtin), ("21", self.serial)] + [
            (ai, value) for ai, value in optional if value is not None
        ]


def _expected_expiry(yymmdd: str) -> dt.date:
    year, month, day = 2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    return dt.date(year, month, day or calendar.monthrange(year, month)[1])


gtins = st.text(string.digits, min_size=13, max_size=13).map(
    lambda first13: first13 + str(gtin_check_digit(first13))
)
# Human-readable text has no escape, so "(digits)" inside a value would open an AI.
set_82_values = st.text(SET_82, min_size=1, max_size=20).filter(
    lambda value: re.search(r"\([0-9]+\)", value) is None
)
expiries = st.one_of(
    st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)).map(lambda day: day.strftime("%y%m%d")),
    st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)).map(lambda day: day.strftime("%y%m00")),
)
packs = st.builds(
    Pack,
    gtin=gtins,
    serial=set_82_values,
    expiry=st.none() | expiries,
    batch=st.none() | set_82_values,
)
SPACES = " \r\n\t\u3000"  # what scanners and keyboards put around a code; GS is not among them
surrounding_space = st.sampled_from(["", " ", "\r\n", "\n", "\t", "  \r\n", "\u3000"])


def _paren(elements: list[tuple[str, str]]) -> str:
    return "".join(f"({ai}){value}" for ai, value in elements)


def _raw(elements: list[tuple[str, str]]) -> str:
    parts = []
    for index, (ai, value) in enumerate(elements):
        variable = ai in ("21", "10")
        last = index == len(elements) - 1
        parts.append(f"{ai}{value}{GS if variable and not last else ''}")
    return "".join(parts)


@st.composite
def spellings(draw: st.DrawFn, pack: Pack) -> str:
    elements = draw(st.permutations(pack.elements()))
    if draw(st.booleans()):
        body = _paren(elements)
    else:
        body = draw(st.sampled_from(["", GS])) + _raw(elements) + draw(st.sampled_from(["", GS]))
    prefix = draw(st.sampled_from(["", "]d2"]))
    return draw(surrounding_space) + prefix + body + draw(surrounding_space)


@FAST
@given(st.data(), packs)
def test_every_spelling_of_a_pack_is_the_same_code(data: st.DataObject, pack: Pack) -> None:
    for _ in range(4):
        text = data.draw(spellings(pack))
        parsed = _parsed(text)
        assert parsed.format is TraceCodeFormat.GS1
        assert parsed.canonical == pack.canonical
        assert parsed.product_id == pack.gtin
        assert parsed.batch == pack.batch
        assert parsed.expiry == (None if pack.expiry is None else _expected_expiry(pack.expiry))


@FAST
@given(packs)
def test_canonical_gs1_parses_back_to_itself(pack: Pack) -> None:
    assert _parsed(pack.canonical).canonical == pack.canonical


@FAST
@given(st.data(), packs, st.integers(1, 9))
def test_corrupted_gtin_check_digit_is_invalid(data: st.DataObject, pack: Pack, shift: int) -> None:
    wrong = (int(pack.gtin[-1]) + shift) % 10
    corrupted = replace(pack, gtin=pack.gtin[:-1] + str(wrong))
    text = data.draw(spellings(corrupted))
    reason = _reason(text)
    if re.fullmatch("[0-9]{20}", text.strip(SPACES)):
        assert reason == "20-digit code must start with 8"
    else:
        assert reason == f"GTIN check digit is {wrong}, expected {pack.gtin[-1]}"


@FAST
@given(st.from_regex(r"[0-79][0-9]{19}", fullmatch=True))
def test_twenty_digits_not_starting_with_8_are_invalid(text: str) -> None:
    result = parse_trace_code(text)
    if isinstance(result, ParsedTraceCode):
        # Only a genuine raw GS1 pack (01 + GTIN + 21 + 2-digit serial) spells as 20 digits.
        assert result.format is TraceCodeFormat.GS1
        assert result.canonical == text
        assert text[:2] == "01"
        assert text[16:18] == "21"
    else:
        assert result.reason == "20-digit code must start with 8"


@FAST
@given(st.from_regex(r"[0-79][0-9]{19}", fullmatch=True).filter(lambda t: t[:2] != "01"))
def test_twenty_digits_not_starting_with_8_or_01_are_always_invalid(text: str) -> None:
    assert _reason(text) == "20-digit code must start with 8"


def _looks_like_gs1(text: str) -> bool:
    return re.match(r"(17[0-9]{6})?01[0-9]{14}", text) is not None


cn20_codes = st.from_regex(r"8[0-9]{19}", fullmatch=True)
mfr_codes = st.text(string.ascii_letters + string.digits, min_size=10, max_size=40).filter(
    lambda code: not re.fullmatch("[0-9]{20}", code) and not _looks_like_gs1(code)
)


@st.composite
def tagged_codes(draw: st.DrawFn) -> tuple[TraceCodeFormat, str, str]:
    """(format, text as sent, expected canonical) of a code generated in one of the formats."""
    kind = draw(st.sampled_from(TraceCodeFormat))
    if kind is TraceCodeFormat.CN20:
        code = draw(cn20_codes)
        text, canonical = code, code
    elif kind is TraceCodeFormat.MFR:
        code = draw(mfr_codes)
        text, canonical = code, code.upper()
    else:
        pack = draw(packs)
        text, canonical = draw(spellings(pack)), pack.canonical
    return kind, draw(surrounding_space) + text + draw(surrounding_space), canonical


@FAST
@given(tagged_codes())
def test_formats_never_mistake_each_other(tagged: tuple[TraceCodeFormat, str, str]) -> None:
    kind, text, canonical = tagged
    parsed = _parsed(text)
    assert (parsed.format, parsed.canonical) == (kind, canonical)


def _assert_obeys_its_format(text: str, parsed: ParsedTraceCode) -> None:
    canonical = parsed.canonical
    if parsed.format is TraceCodeFormat.CN20:
        assert re.fullmatch("8[0-9]{19}", canonical)
        assert text.strip() == canonical
        assert parsed.product_id == canonical[:7]
        assert parsed.special_control is canonical.startswith("89")
    elif parsed.format is TraceCodeFormat.GS1:
        match = re.fullmatch(r"01([0-9]{14})21(.{1,20})", canonical)
        assert match is not None
        gtin, serial = match.groups()
        assert int(gtin[-1]) == gtin_check_digit(gtin[:13])
        assert set(serial) <= set(SET_82)
        assert gtin in text
        assert serial in text
        assert parsed.product_id == gtin
        assert parsed.special_control is False
    else:
        assert re.fullmatch("[0-9A-Z]{10,40}", canonical)
        assert text.strip().upper() == canonical
        assert not re.fullmatch("[0-9]{20}", canonical)
        assert not _looks_like_gs1(canonical)
        assert parsed.product_id is None
        assert parsed.special_control is False


junk = st.one_of(
    st.text(max_size=60),
    st.text("0123456789ABCabc()]d2~- \r\n\t" + GS, max_size=50),
    st.text("0128", min_size=14, max_size=26),
)


@FAST
@given(junk)
def test_junk_is_accepted_only_when_it_obeys_its_format(text: str) -> None:
    result = parse_trace_code(text)
    assert result.text == text
    if isinstance(result, ParsedTraceCode):
        _assert_obeys_its_format(text, result)
    else:
        assert result.reason  # every refusal says why
