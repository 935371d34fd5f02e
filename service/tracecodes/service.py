"""Parse one scanned trace code (CONTRACT §1) into its format and canonical identity.

Pure: no I/O, no clock. Classification happens before validation, so a code is only ever judged
by the rules of the format it is attempting and a failed cn20 or GS1 attempt is never rescued as
an mfr code. After stripping surrounding whitespace (never GS, which Python counts as whitespace
but which is GS1 syntax):

1. Empty: invalid.
2. Exactly 20 ASCII digits: a cn20 attempt. Starting with 8 it is a cn20 code. Otherwise it is
   invalid, with one exception: a 20-digit string that is a *valid* raw GS1 element string
   (01 + GTIN + 21 + a 2-digit serial) is that GS1 pack, so the pack is the same code in every
   spelling and its canonical form parses back to itself.
3. A GS1 attempt, when the code
   - starts with "(" (parenthesised spelling) or "]d2" (DataMatrix symbology identifier), or
   - contains GS (\\x1d), or
   - starts with AI 01 and a 14-digit GTIN, optionally preceded by AI 17 and 6 digits.
   The last rule catches every raw spelling that needs no GS: with no GS the only variable-length
   field (the required AI 21) is last, so the fixed-length fields 01 and 17 come first. A GTIN
   with no serial after it is therefore "missing AI 21", not an mfr code.
   A GS1 attempt is valid GS1 or invalid.
4. Anything else is an mfr attempt: 10-40 ASCII letters or digits, upper-cased.

Positions in reasons count from 1 in the code after whitespace stripping.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

from service.tracecodes.schemas import InvalidTraceCode, ParsedTraceCode, TraceCodeFormat

_GS = "\x1d"
_SYMBOLOGY_ID = "]d2"
# Unicode whitespace except the ASCII separators FS/GS/RS/US (\x1c-\x1f).
_SURROUNDING_SPACE = re.compile(r"\A[^\S\x1c-\x1f]+|[^\S\x1c-\x1f]+\Z")
# [0-9] rather than \d everywhere: \d also matches full-width and other Unicode digits.
_TWENTY_DIGITS = re.compile(r"[0-9]{20}")
_GS1_RAW_START = re.compile(r"(?:17[0-9]{6})?01[0-9]{14}")
_MFR_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_GS1_SET_82 = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
_PAREN_AI = re.compile(r"\(([0-9]+)\)")

_AI_NAMES = {"01": "GTIN", "21": "serial", "17": "expiry", "10": "batch"}
_FIXED_LENGTH = {"01": 14, "17": 6}
_MAX_VARIABLE_LENGTH = 20
# GS1 General Specifications fig. 7.8.5-2: an AI's first two digits fix its length, which lets
# a raw string name the whole unknown AI it stopped at (e.g. 240, not 24).
_THREE_DIGIT_AI_PREFIXES = frozenset({"23", "24", "25", "40", "41", "42", "71"})
_FOUR_DIGIT_AI_PREFIXES = frozenset(
    {"31", "32", "33", "34", "35", "36", "39", "43", "70", "72", "80", "81", "82"}
)


class _Rejected(Exception):
    """Raised below parse_trace_code so every check can stop at the first precise reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Element(NamedTuple):
    ai: str
    value: str
    position: int  # of the AI's first digit


# Pure and called for the same code more than once on the hot path (reading the first-seen
# set, then deciding); results are immutable, so a bounded memo is safe.
@lru_cache(maxsize=1 << 16)
def parse_trace_code(text: str) -> ParsedTraceCode | InvalidTraceCode:
    """Classify, validate and canonicalise one code as sent (see the module docstring)."""
    if len(text) == 20 and text[0] == "8" and text.isascii() and text.isdigit():
        # Nearly every code scanned is a bare cn20: this is what rule 2 makes of it.
        return ParsedTraceCode(text, TraceCodeFormat.CN20, text, text[:7], text[1] == "9")
    code = _SURROUNDING_SPACE.sub("", text)
    try:
        return _parse(text, code)
    except _Rejected as rejected:
        return InvalidTraceCode(text=text, reason=rejected.reason)


def gtin_check_digit(first13: str) -> int:
    """The GS1 mod-10 check digit of a GTIN-14's first 13 digits."""
    if len(first13) != 13 or not first13.isascii() or not first13.isdigit():
        raise ValueError(f"a GTIN-14 check digit needs 13 digits, got {first13!r}")
    # Weights alternate 3, 1, ... counting from the digit next to the check digit.
    total = sum(int(digit) * (3 if index % 2 == 0 else 1) for index, digit in enumerate(first13))
    return (10 - total % 10) % 10


def _parse(text: str, code: str) -> ParsedTraceCode:
    if not code:
        raise _Rejected("empty trace code")
    if _TWENTY_DIGITS.fullmatch(code):
        return _parse_twenty_digits(text, code)
    if _is_gs1_attempt(code):
        return _parse_gs1(text, code)
    return _parse_mfr(text, code)


def _is_gs1_attempt(code: str) -> bool:
    return (
        code.startswith(("(", _SYMBOLOGY_ID))
        or _GS in code
        or _GS1_RAW_START.match(code) is not None
    )


# --- cn20 -------------------------------------------------------------------------------------


def _parse_twenty_digits(text: str, code: str) -> ParsedTraceCode:
    if code.startswith("8"):
        return ParsedTraceCode(
            text=text,
            format=TraceCodeFormat.CN20,
            canonical=code,
            product_id=code[:7],
            special_control=code.startswith("89"),
        )
    try:
        return _parse_gs1(text, code)
    except _Rejected:
        # Not the rare GS1 pack that spells as 20 digits, so most likely a mistyped cn20.
        raise _Rejected("20-digit code must start with 8") from None


# --- mfr --------------------------------------------------------------------------------------


def _parse_mfr(text: str, code: str) -> ParsedTraceCode:
    if not 10 <= len(code) <= 40:
        raise _Rejected(f"length {len(code)} is not a trace code (mfr codes are 10-40 characters)")
    for index, char in enumerate(code, start=1):
        # Checked before upper-casing: str.upper() maps some non-ASCII letters into A-Z
        # ("ı" -> "I") and changes the length of others ("ß" -> "SS").
        if char not in _MFR_CHARS:
            raise _Rejected(
                f"character {char!r} at position {index} is not allowed "
                "(mfr codes are letters A-Z and digits 0-9)"
            )
    return ParsedTraceCode(
        text=text,
        format=TraceCodeFormat.MFR,
        canonical=code.upper(),
        product_id=None,
        special_control=False,
    )


# --- GS1: splitting the two spellings into elements --------------------------------------------


def _parse_gs1(text: str, code: str) -> ParsedTraceCode:
    offset = len(_SYMBOLOGY_ID) if code.startswith(_SYMBOLOGY_ID) else 0
    # Encoders differ on whether the last field gets a GS too; it separates nothing.
    body = code[offset:].rstrip(_GS)
    if not body:
        raise _Rejected("GS1 element string is empty")
    if body.startswith("("):
        fields = _collect(_parenthesised_elements(body, offset))
    else:
        fields = _collect(_raw_elements(body, offset))
    return _build_gs1(text, fields)


def _parenthesised_elements(body: str, offset: int) -> list[_Element]:
    """Split `(01)…(21)…`; a "(digits)" always opens an AI, as human-readable text has no escape."""
    markers = list(_PAREN_AI.finditer(body))
    if not markers or markers[0].start() != 0:
        raise _Rejected(f"expected an AI in parentheses at position {offset + 1}, e.g. (01)")
    ends = [marker.start() for marker in markers[1:]] + [len(body)]
    return [
        _Element(marker.group(1), body[marker.end() : end], offset + marker.start() + 2)
        for marker, end in zip(markers, ends, strict=True)
    ]


def _raw_elements(body: str, offset: int) -> Iterator[_Element]:
    """Split `0106901234567892 21ABC123 <GS> 17270131 10L01` (spaces added for reading)."""
    # Some scanners transmit the leading FNC1 as a GS instead of dropping it.
    index = 1 if body.startswith(_GS) else 0
    while index < len(body):
        ai = _raw_ai_at(body, index, offset)
        start = index + len(ai)
        end = _raw_value_end(body, ai, start)
        yield _Element(ai, body[start:end], offset + index + 1)
        # Tolerates a superfluous GS after a fixed-length field as well.
        index = end + 1 if body.startswith(_GS, end) else end


def _raw_ai_at(body: str, index: int, offset: int) -> str:
    prefix = body[index : index + 2]
    position = offset + index + 1
    if len(prefix) != 2 or not prefix.isascii() or not prefix.isdigit():
        raise _Rejected(f"expected a GS1 AI at position {position}, found {prefix!r}")
    if prefix in _AI_NAMES:
        return prefix
    length = _unknown_ai_length(prefix)
    raise _Rejected(f"unknown AI {body[index : index + length]} at position {position}")


def _unknown_ai_length(prefix: str) -> int:
    if prefix in _FOUR_DIGIT_AI_PREFIXES:
        return 4
    return 3 if prefix in _THREE_DIGIT_AI_PREFIXES else 2


def _raw_value_end(body: str, ai: str, start: int) -> int:
    separator = body.find(_GS, start)
    if separator == -1:
        separator = len(body)
    fixed = _FIXED_LENGTH.get(ai)
    # A fixed-length field cut short by a GS stops there, so its reason shows only its own value.
    return separator if fixed is None else min(start + fixed, separator)


# --- GS1: validating the elements --------------------------------------------------------------


def _collect(elements: Iterable[_Element]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for element in elements:
        if element.ai not in _AI_NAMES:
            raise _Rejected(f"unknown AI {element.ai} at position {element.position}")
        if element.ai in fields:
            raise _Rejected(
                f"AI {element.ai} ({_AI_NAMES[element.ai]}) given twice, "
                f"again at position {element.position}"
            )
        fields[element.ai] = element.value
    for required in ("01", "21"):
        if required not in fields:
            raise _Rejected(f"missing AI {required} ({_AI_NAMES[required]})")
    return fields


def _build_gs1(text: str, fields: dict[str, str]) -> ParsedTraceCode:
    gtin = _checked_gtin(fields["01"])
    serial = _checked_set_82("serial", fields["21"])
    expiry = _expiry_date(fields["17"]) if "17" in fields else None
    batch = _checked_set_82("batch", fields["10"]) if "10" in fields else None
    return ParsedTraceCode(
        text=text,
        format=TraceCodeFormat.GS1,
        canonical=f"01{gtin}21{serial}",
        product_id=gtin,
        special_control=False,
        expiry=expiry,
        batch=batch,
    )


def _checked_gtin(gtin: str) -> str:
    if len(gtin) != 14 or not gtin.isascii() or not gtin.isdigit():
        raise _Rejected(f"AI 01 (GTIN) must be 14 digits, got {gtin!r}")
    expected = gtin_check_digit(gtin[:13])
    if int(gtin[13]) != expected:
        raise _Rejected(f"GTIN check digit is {gtin[13]}, expected {expected}")
    return gtin


def _checked_set_82(name: str, value: str) -> str:
    if not value:
        raise _Rejected(f"{name} is empty")
    if len(value) > _MAX_VARIABLE_LENGTH:
        raise _Rejected(
            f"{name} is {len(value)} characters long, at most {_MAX_VARIABLE_LENGTH} allowed"
        )
    for char in value:
        if char not in _GS1_SET_82:
            raise _Rejected(f"{name} contains character {char!r} outside GS1 set 82")
    return value


def _expiry_date(yymmdd: str) -> dt.date:
    if len(yymmdd) != 6 or not yymmdd.isascii() or not yymmdd.isdigit():
        raise _Rejected(f"AI 17 (expiry) must be 6 digits YYMMDD, got {yymmdd!r}")
    year, month, day = 2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    if not 1 <= month <= 12:
        raise _Rejected(f"AI 17 date {yymmdd} does not exist")
    if day == 0:
        # GS1: day 00 means the last day of the month.
        day = calendar.monthrange(year, month)[1]
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise _Rejected(f"AI 17 date {yymmdd} does not exist") from None
