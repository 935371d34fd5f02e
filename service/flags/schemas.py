from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


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
