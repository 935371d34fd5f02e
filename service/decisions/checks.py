"""A settlement decoded and checked once, wherever it comes from (a gate request, a topic
event): msgspec checks types and bounds while it decodes; the rest is here, each problem said
in words with the field it is about. The gate answers these 422, the consumers dead-letter."""

from __future__ import annotations

import msgspec

from service.decisions.schemas import Settlement
from service.kit.errors import Unprocessable
from service.kit.validation import describe
from service.policy.service import SettledAtError, parse_settled_at

_DECODER = msgspec.json.Decoder(Settlement)


class InvalidSettlement(Unprocessable):
    code = "VALIDATION_ERROR"


def decode_settlement(raw: bytes) -> Settlement:
    """A gate request's body, typed and checked, or InvalidSettlement saying why not."""
    check_raw(raw)
    try:
        settlement = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidSettlement(describe(exc)) from None
    check_settlement(settlement)
    return settlement


def check_raw(raw: bytes) -> None:
    """PostgreSQL text cannot hold NUL, and JSON can only carry one escaped: refused here,
    in the bytes, not as a failed write later."""
    if b"\\u0000" in raw:
        raise InvalidSettlement("texts must not contain a NUL character (\\u0000)")


def check_settlement(settlement: Settlement) -> None:
    """What the schema cannot say: raises InvalidSettlement naming the field. (NUL is
    `check_raw`'s, on the bytes it came in.)"""
    problem = _problem(settlement)
    if problem is not None:
        raise InvalidSettlement(problem)


def _problem(settlement: Settlement) -> str | None:
    sid = settlement.settlement_id
    if not (sid.isascii() and sid.isprintable()) or " " in sid:
        return "settlement_id: must be printable ASCII without spaces"
    try:
        parse_settled_at(settlement.settled_at)
    except SettledAtError as exc:
        return f"settled_at: {exc}"
    lines = settlement.lines
    if len(lines) > 1 and len({line.line_no for line in lines}) != len(lines):
        return "lines: line_no values must be unique within a settlement"
    return None
