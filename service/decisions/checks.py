"""A settlement decoded and checked once, wherever it comes from (a gate request, a topic
event): msgspec checks types and bounds while it decodes; the rest is here, each problem said
in words with the field it is about. The gate answers these 422, the consumers dead-letter."""

from __future__ import annotations

import re

import msgspec

from service.decisions.schemas import Settlement
from service.kit.errors import Unprocessable
from service.kit.validation import describe
from service.policy.service import SettledAtError, parse_settled_at

_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_DECODER = msgspec.json.Decoder(Settlement)


class InvalidSettlement(Unprocessable):
    code = "VALIDATION_ERROR"


def decode_settlement(raw: bytes) -> Settlement:
    try:
        settlement = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidSettlement(describe(exc)) from None
    check_settlement(settlement)
    return settlement


def check_settlement(settlement: Settlement) -> None:
    """What the schema cannot say: raises InvalidSettlement naming the field."""
    problem = _problem(settlement)
    if problem is not None:
        raise InvalidSettlement(problem)


def _problem(settlement: Settlement) -> str | None:
    if not _PRINTABLE.fullmatch(settlement.settlement_id):
        return "settlement_id: must be printable ASCII without spaces"
    try:
        parse_settled_at(settlement.settled_at)
    except SettledAtError as exc:
        return f"settled_at: {exc}"
    numbers = [line.line_no for line in settlement.lines]
    if len(numbers) != len(set(numbers)):
        return "lines: line_no values must be unique within a settlement"
    return _nul(settlement)


def _nul(settlement: Settlement) -> str | None:
    """PostgreSQL text cannot hold NUL: refuse it here, not as a failed write later (one
    pass over the free texts)."""
    texts = [settlement.institution_id, settlement.patient_id or ""]
    for line in settlement.lines:
        texts.append(line.drug_code)
        texts += line.trace_codes
    if "\x00" in "".join(texts):
        return "texts must not contain a NUL character"
    return None
