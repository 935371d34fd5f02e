"""Response shapes of CONTRACT §4, for the OpenAPI document (the hot routes render dicts with
orjson directly and declare these as their documented responses)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from service.flags.schemas import CaseSummary, FirstPaymentOut, FlagCase, FlagOut
from service.institutions.schemas import InstitutionOut


class ReasonOut(BaseModel):
    code: str
    severity: str
    trace_code: str | None = None
    message: str | None = None
    first_payment: FirstPaymentOut | None = None


class LineOut(BaseModel):
    line_no: int
    decision: str
    reasons: list[ReasonOut]


class GateAnswer(BaseModel):
    settlement_id: str
    decision: str
    enforced: bool
    replayed: bool
    lines: list[LineOut]
    flags: list[str]


class ReversalRecord(BaseModel):
    reversal_id: str
    line_nos: list[int] | None  # as asked: null = every line
    released: list[str]
    reversed_at: dt.datetime


class RecordedSettlement(GateAnswer):
    """GET /v1/settlements/{settlement_id}: the recorded decision and its reversals since."""

    reversals: list[ReversalRecord]


class ReversalAnswer(BaseModel):
    settlement_id: str
    reversal_id: str
    released: list[str]
    replayed: bool


class VerifyResult(BaseModel):
    trace_code: str
    valid: bool
    format: str | None
    canonical: str | None
    status: str | None
    units_left: int | None = None
    reason: str | None = None
    product_id: str | None = None
    special_control: bool | None = None


class VerifyOut(BaseModel):
    results: list[VerifyResult]


class CodeEventOut(BaseModel):
    type: str
    settlement_id: str
    line_no: int
    institution_id: str
    at: dt.datetime
    recorded_at: dt.datetime
    patient_ref: str | None
    units: int | None = None
    duplicate: bool | None = None
    reversal_id: str | None = None


class CodeHistory(BaseModel):
    trace_code: str
    format: str
    status: str
    events: list[CodeEventOut]
    flags: list[FlagOut]


class FlagCaseView(FlagCase):
    """GET /v1/flags/{flag_id}: the case and every payment of its code, in history order."""

    payments: list[CodeEventOut]


class InstitutionView(InstitutionOut):
    """The institution GET: the contract's keys, and how its cases stand (CONTRACT §7)."""

    cases: CaseSummary
