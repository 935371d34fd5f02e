"""What the decision core reads and what it returns (CONTRACT §3-§5): the typed settlement the
gate decodes from its request and the consumers from the settlements topic (msgspec, decoded
once), and the verdicts. Validation beyond types and bounds (printable ids, unique line
numbers, NUL, readable times) is `service.decisions.checks`, which says what is wrong in words."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta

from service.claims.schemas import ClaimChange, FirstPayment, Payment
from service.flags.schemas import FlagDraft
from service.policy.schemas import NoCodeReason
from service.policy.service import parse_settled_at

Identifier = Annotated[str, Meta(min_length=1, max_length=64)]
# Bounds are generous but finite so an absurd body is refused before any work is done.
TraceCodeText = Annotated[str, Meta(max_length=128)]
InstitutionId = Annotated[str, Meta(min_length=12, max_length=12)]


class Line(msgspec.Struct, frozen=True, gc=False):
    line_no: Annotated[int, Meta(ge=1, le=100_000)]
    drug_code: Annotated[str, Meta(min_length=1, max_length=64)]
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    split: bool = False
    pack_size: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    trace_codes: Annotated[tuple[TraceCodeText, ...], Meta(max_length=500)] = ()
    no_code_reason: NoCodeReason | None = None


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """A settlement as the gate receives it and as the settlements topic carries it."""

    settlement_id: Identifier
    institution_id: InstitutionId
    settled_at: Annotated[str, Meta(max_length=64)]
    lines: Annotated[tuple[Line, ...], Meta(min_length=1, max_length=200)]
    patient_id: Annotated[str, Meta(max_length=128)] | None = None

    @property
    def settled_at_instant(self) -> dt.datetime:
        return parse_settled_at(self.settled_at)


class ReasonCode(StrEnum):
    MISSING_TRACE_CODE = "MISSING_TRACE_CODE"
    INVALID_TRACE_CODE = "INVALID_TRACE_CODE"
    QUANTITY_MISMATCH = "QUANTITY_MISMATCH"
    DUPLICATE_IN_SETTLEMENT = "DUPLICATE_IN_SETTLEMENT"
    DUPLICATE_PAYMENT = "DUPLICATE_PAYMENT"
    SPLIT_OVERUSE = "SPLIT_OVERUSE"
    SPLIT_CROSS_INSTITUTION = "SPLIT_CROSS_INSTITUTION"
    EXEMPT = "EXEMPT"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Source(StrEnum):
    GATE = "gate"
    STREAM = "stream"


class Reason(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    code: ReasonCode
    severity: Severity
    trace_code: str | None = None
    message: str | None = None
    first_payment: FirstPayment | None = None


class LineVerdict(msgspec.Struct, frozen=True, gc=False):
    """A line's decision as the gate answers it and the record keeps it."""

    line_no: int
    decision: str  # pay | reject
    reasons: list[Reason]

    @property
    def paid(self) -> bool:
        return self.decision == "pay"


class Decision(msgspec.Struct, gc=False):
    settlement_id: str
    enforced: bool
    lines: list[LineVerdict]
    changes: list[ClaimChange]
    payments: list[Payment]
    flags: list[FlagDraft]

    @property
    def outcome(self) -> str:
        paid = [line.decision for line in self.lines].count("pay")
        if paid == len(self.lines):
            return "pay"
        return "reject" if paid == 0 else "partial"


class Answer(msgspec.Struct, frozen=True, gc=False):
    """The gate's answer (CONTRACT §4), which the record keeps as it was given."""

    settlement_id: str
    decision: str  # pay | partial | reject
    enforced: bool
    replayed: bool
    lines: list[LineVerdict]
    flags: list[str]
