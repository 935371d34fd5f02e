"""Flags: what the decision core drafts, and the API's documented shapes."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Self

import msgspec
from pydantic import BaseModel, Field, model_validator

from service.claims.schemas import FirstPayment


class FlagStatus(StrEnum):
    """CONTRACT §7: new → investigating → escalated → closed; any open status may close,
    a closed case may be reopened to investigating."""

    NEW = "new"
    INVESTIGATING = "investigating"
    ESCALATED = "escalated"
    CLOSED = "closed"


class Resolution(StrEnum):
    CONFIRMED_FRAUD = "confirmed_fraud"
    LEGITIMATE = "legitimate"  # e.g. a return not yet recorded: a false alert
    DATA_ERROR = "data_error"


class FlagKind(StrEnum):
    DUPLICATE_PAYMENT = "duplicate_payment"
    SPLIT_OVERUSE = "split_overuse"
    SPLIT_CROSS_INSTITUTION = "split_cross_institution"
    MISSING_CODE = "missing_code"
    INVALID_CODE = "invalid_code"
    QUANTITY_MISMATCH = "quantity_mismatch"


class FlagDraft(msgspec.Struct, frozen=True, gc=False):
    """A finding of the decision core, before it is named and dated as a flag."""

    kind: FlagKind
    severity: str
    line_no: int
    trace_code: str | None
    first_payment: FirstPayment | None = None


class FlagRecord(msgspec.Struct, frozen=True, gc=False):
    """A flag as the record keeps it and the flags topic carries it (CONTRACT §5)."""

    flag_id: str
    kind: str
    severity: str
    trace_code: str | None
    institution_id: str
    settlement_id: str
    line_no: int
    settled_at: dt.datetime
    detected_at: dt.datetime
    patient_ref: str | None
    first_payment: FirstPayment | None

    def to_json(self) -> dict[str, Any]:
        """The contract's flag JSON (times as `isoformat`, as the API renders stored flags)."""
        return {
            "flag_id": self.flag_id, "kind": self.kind, "severity": self.severity,
            "trace_code": self.trace_code, "institution_id": self.institution_id,
            "settlement_id": self.settlement_id, "line_no": self.line_no,
            "settled_at": self.settled_at.isoformat(),
            "detected_at": self.detected_at.isoformat(), "patient_ref": self.patient_ref,
            "first_payment": self.first_payment.to_json() if self.first_payment else None,
        }


class FirstPaymentOut(BaseModel):
    settlement_id: str
    institution_id: str
    paid_at: dt.datetime


class FlagOut(BaseModel):
    flag_id: str
    kind: str
    severity: str
    trace_code: str | None
    institution_id: str
    settlement_id: str
    line_no: int
    settled_at: dt.datetime
    detected_at: dt.datetime
    patient_ref: str | None
    first_payment: FirstPaymentOut | None
    status: FlagStatus
    resolution: Resolution | None
    updated_at: dt.datetime


class FlagPage(BaseModel):
    items: list[FlagOut]
    next_cursor: str | None


class FlagUpdate(BaseModel):
    """PATCH /v1/flags/{flag_id}. Whether the step is allowed from the case's current status
    is the service's to judge (409); this checks only what the body says by itself."""

    status: FlagStatus
    note: str | None = Field(default=None, max_length=2000)
    resolution: Resolution | None = None

    @model_validator(mode="after")
    def _resolution_only_when_closing(self) -> Self:
        if self.status is FlagStatus.CLOSED and self.resolution is None:
            raise ValueError("closing a case needs a resolution: confirmed_fraud, legitimate "
                             "or data_error")
        if self.status is not FlagStatus.CLOSED and self.resolution is not None:
            raise ValueError("a resolution is given only when closing a case")
        if self.note is not None and "\x00" in self.note:
            raise ValueError("the note must not contain a NUL character")
        return self


class Actor(BaseModel):
    key_id: int
    role: str


class HistoryEntry(BaseModel):
    status: FlagStatus
    note: str | None
    resolution: Resolution | None = None
    by: Actor
    at: dt.datetime


class FlagCase(FlagOut):
    """A flag with its triage history (the PATCH answer)."""

    history: list[HistoryEntry]


class OpenByAge(BaseModel):
    """Open cases by time since detection."""

    under_1d: int
    from_1d_to_7d: int
    from_7d_to_30d: int
    over_30d: int


class CaseSummary(BaseModel):
    """Open cases by status and age; closed cases by resolution, and the false-alert rate:
    the share of closed cases resolved `legitimate` (null while none is closed)."""

    open: int
    open_by_status: dict[str, int]
    open_by_age: OpenByAge
    closed: int
    closed_by_resolution: dict[str, int]
    false_alert_rate: float | None
