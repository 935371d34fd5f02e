"""Flags: what the decision core drafts, and the API's documented shapes."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

import msgspec
from pydantic import BaseModel

from service.claims.schemas import FirstPayment


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


class FlagPage(BaseModel):
    items: list[FlagOut]
    next_cursor: str | None
