"""The NHSA envelope (定点医药机构接口, CONTRACT §8) and what its messages are read into."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class Infno(StrEnum):
    SALE = "3505"  # 商品销售: one sale row
    SALES = "3505A"  # the same rows in a batch
    RETURN = "3506"  # 销售退货
    QUERY = "3513"  # 销售及追溯码查询


class MessageRefused(Exception):
    """A message that cannot be taken: answered `infcode: -1` with this text as `err_msg`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Envelope:
    infno: Infno
    msgid: str
    fixmedins_code: str
    inf_time: dt.datetime
    input: dict[str, Any]


@dataclass(slots=True)  # not frozen: a bulk upload builds millions, frozen costs a third more
class SaleRow:
    """One `selinfo` row as read from what a vendor sent (strings trimmed, empty = absent)."""

    where: str  # the row's place in the message, for messages in words
    med_list_codg: str
    fixmedins_bchno: str
    rtal_docno: str
    psn_no: str | None
    split: bool  # trdn_flag "1" (拆零)
    count: Decimal  # sel_retn_cnt: packs, or units when split
    sold_at: dt.datetime  # sel_retn_time
    codes: list[str]  # drugtracinfo[].drug_trac_codg, as sent
    no_code_reason: str | None


@dataclass(frozen=True, slots=True)
class Sale:
    """One settlement an NHSA sale message becomes: its body in the contract's JSON (§3), and
    the rows it was made of, which name its lines in answers in words."""

    settlement_id: str
    body: dict[str, Any]
    rows: list[SaleRow]  # line n is rows[n - 1]

    @property
    def codes(self) -> int:
        return sum(len(line["trace_codes"]) for line in self.body["lines"])

    def label(self, line_no: int) -> str:
        """Where a line stands for the cashier: the receipt and its row, or the batch."""
        if not 1 <= line_no <= len(self.rows):
            return f"line {line_no}"
        row = self.rows[line_no - 1]
        if self.settlement_id.startswith("3505A:"):
            return f"单据 {row.rtal_docno} 第{line_no}行（{row.med_list_codg}）"
        return f"批次 {row.fixmedins_bchno}（{row.med_list_codg}）"


@dataclass(frozen=True, slots=True)
class ReturnRequest:
    """A 3506: the sale it returns (by either id it may have) and the codes returned."""

    reversal_id: str
    sale_ids: tuple[str, ...]  # the 3505 id first, then the 3505A one
    codes: list[str]  # as sent
    returned_at: dt.datetime  # sel_retn_time: the reversal's time in the record


@dataclass(frozen=True, slots=True)
class SalesQuery:
    """A 3513: at least an institution or a code; `until` is exclusive."""

    institution_id: str | None
    code: str | None  # canonical
    since: dt.datetime | None
    until: dt.datetime | None
    page_num: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page_num - 1) * self.page_size

    def institution_range(self, span_max: dt.timedelta) -> tuple[str, dt.datetime, dt.datetime]:
        """A query without a code reads an institution's sales by time: it needs the
        institution and a range, and a bounded one, whatever the record holds."""
        if self.institution_id is None:
            raise MessageRefused("input needs drug_trac_codg or fixmedins_code")
        if self.since is None or self.until is None:
            raise MessageRefused("input.begndate and input.enddate are required when "
                                 "drug_trac_codg is not given")
        if self.until - self.since > span_max:
            raise MessageRefused(f"input: begndate to enddate may span at most "
                                 f"{span_max.days} days; ask month by month")
        return self.institution_id, self.since, self.until


# --- the reply, as documented in OpenAPI (the route renders plain dicts) -------------------


class NhsaRequestDoc(BaseModel):
    """The request envelope, for the OpenAPI document: the route reads the body itself, so a
    malformed one is answered `infcode: -1` in the envelope instead of a 422."""

    infno: str = Field(examples=["3505"])
    msgid: str
    fixmedins_code: str = Field(examples=["P11010500001"])
    inf_time: str = Field(examples=["2025-07-01 10:15:00"])
    opter: str | None = None
    opter_name: str | None = None
    infver: str | None = None
    input: dict[str, Any]


class NhsaReply(BaseModel):
    infcode: Literal[0, -1]
    inf_refmsgid: str
    refmsg_time: str
    respond_time: str
    err_msg: str | None
    output: dict[str, Any]
