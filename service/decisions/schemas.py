"""What the decision core reads and what it returns (CONTRACT §3-§5)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from service.policy.schemas import NoCodeReason
from service.policy.service import parse_settled_at

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
]
# Bounds are generous but finite so an absurd body is refused before any work is done.
TraceCodeText = Annotated[str, StringConstraints(max_length=128)]


class SettlementLineIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    line_no: int = Field(ge=1, le=100_000)
    drug_code: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1_000_000)
    split: bool = False
    pack_size: int | None = Field(default=None, ge=1, le=1_000_000)
    trace_codes: list[TraceCodeText] = Field(default_factory=list, max_length=500)
    no_code_reason: NoCodeReason | None = None


class SettlementIn(BaseModel):
    """A settlement as the gate receives it and as the settlements topic carries it."""

    model_config = ConfigDict(extra="ignore")

    settlement_id: Identifier
    institution_id: str = Field(min_length=12, max_length=12)
    settled_at: str = Field(max_length=64)
    patient_id: str | None = Field(default=None, max_length=128)
    lines: list[SettlementLineIn] = Field(min_length=1, max_length=200)

    @field_validator("settled_at")
    @classmethod
    def _readable_time(cls, value: str) -> str:
        parse_settled_at(value)  # raises a ValueError naming the accepted forms
        return value

    @field_validator("lines")
    @classmethod
    def _unique_line_numbers(cls, lines: list[SettlementLineIn]) -> list[SettlementLineIn]:
        numbers = [line.line_no for line in lines]
        if len(numbers) != len(set(numbers)):
            raise ValueError("line_no values must be unique within a settlement")
        return lines

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        """PostgreSQL text cannot hold NUL: refuse it here, not as a failed write later. One
        pass over the free texts (a validator per field was two thirds of validation time)."""
        texts = [self.institution_id, self.settled_at, self.patient_id or ""]
        for line in self.lines:
            texts.append(line.drug_code)
            texts += line.trace_codes
        if "\x00" in "".join(texts):
            raise ValueError("texts must not contain a NUL character")
        return self

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


class FlagKind(StrEnum):
    DUPLICATE_PAYMENT = "duplicate_payment"
    SPLIT_OVERUSE = "split_overuse"
    SPLIT_CROSS_INSTITUTION = "split_cross_institution"
    MISSING_CODE = "missing_code"
    INVALID_CODE = "invalid_code"
    QUANTITY_MISMATCH = "quantity_mismatch"


class Source(StrEnum):
    GATE = "gate"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class FirstPayment:
    settlement_id: str
    institution_id: str
    paid_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "settlement_id": self.settlement_id,
            "institution_id": self.institution_id,
            "paid_at": self.paid_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class CodeState:
    """What the first-seen set holds for a paid code. `owner` is the token of the (settlement,
    line) that paid it first; a split pack also lists every line that sold units from it."""

    owner: int
    institution_no: int
    paid_at: int  # epoch seconds
    units_used: int | None = None
    pack_size: int | None = None
    split_owners: tuple[int, ...] = ()

    @property
    def is_split(self) -> bool:
        return self.units_used is not None


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    severity: Severity
    trace_code: str | None = None
    message: str | None = None
    first_payment: FirstPayment | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "severity": self.severity.value}
        if self.trace_code is not None:
            body["trace_code"] = self.trace_code
        if self.message is not None:
            body["message"] = self.message
        if self.first_payment is not None:
            body["first_payment"] = self.first_payment.to_json()
        return body


@dataclass(frozen=True, slots=True)
class ClaimChange:
    """A compare-and-set on one code of the first-seen set: from `expected` to `new`."""

    canonical: str
    line_no: int
    expected: CodeState | None
    new: CodeState | None
    units: int | None = None  # units sold by this change (split packs)

    def undone(self) -> ClaimChange:
        """The change that takes this one back (lands only while this one's `new` holds)."""
        return ClaimChange(self.canonical, self.line_no, self.new, self.expected, self.units)


@dataclass(frozen=True, slots=True)
class Payment:
    """A paid code of a paid line; `duplicate` when it was paid without taking the claim."""

    canonical: str
    line_no: int
    units: int | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class FlagDraft:
    kind: FlagKind
    severity: str
    line_no: int
    trace_code: str | None
    first_payment: FirstPayment | None = None


@dataclass(slots=True)
class LineDecision:
    line_no: int
    paid: bool
    reasons: list[Reason] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "line_no": self.line_no,
            "decision": "pay" if self.paid else "reject",
            "reasons": [reason.to_json() for reason in self.reasons],
        }


@dataclass(slots=True)
class Decision:
    settlement_id: str
    enforced: bool
    lines: list[LineDecision]
    changes: list[ClaimChange]
    payments: list[Payment]
    flags: list[FlagDraft]

    @property
    def outcome(self) -> str:
        paid = sum(line.paid for line in self.lines)
        if paid == len(self.lines):
            return "pay"
        return "reject" if paid == 0 else "partial"
