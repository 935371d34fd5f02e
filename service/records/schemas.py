"""A settlement as the record keeps it: what the gate or a consumer decided, every payment and
claim it makes, every flag it raises. The gate ships these effects inside its Kafka event so a
consumer records the gate's decision without judging it again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from service.claims.schemas import Payment
from service.flags.schemas import FlagRecord
from service.policy.schemas import NoCodeReason


class ClaimRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A first payment (whole pack, `units` None) or units sold from an opened pack (split)."""

    code: str
    line_no: int
    units: int | None = None
    pack_size: int | None = None


# A code a line paid, as its recorded line lists it (what a reversal gives back):
# [code, units (split sales), duplicate].
PaidCode = tuple[str, int | None, bool]


class _LineFields(msgspec.Struct, frozen=True, gc=False):
    """What the record keeps of a line, in this order (both of its JSON forms below)."""

    line_no: int
    drug_code: str
    quantity: int
    split: bool
    pack_size: int | None
    trace_codes: tuple[str, ...]
    no_code_reason: NoCodeReason | None
    decision: str
    reasons: list[Any]
    paid_codes: list[PaidCode]


class RecordedLine(_LineFields, frozen=True, gc=False, array_like=True):
    """A line as sent, with its verdict and the codes it paid. Its reasons are the answer's
    (decisions.schemas.Reason, read back as plain JSON: the record stores them, it does not
    judge them).

    Kept as a JSON array of its fields in their order (`decode_lines` also reads the object
    form written before, `NamedRecordedLine`): the field names were 45 % of a settlement's
    lines, and what PostgreSQL checks and stores of them cost 0.49 us a trace code of the
    stream's (measured by replaying a full benchmark's batches). Fields are only ever added
    at the end, with a default, so rows and events written before still decode."""

    @property
    def paid(self) -> bool:
        return self.decision == "pay"


class NamedRecordedLine(_LineFields, frozen=True, gc=False):
    """A recorded line as rows and events written before the array form hold it: a JSON
    object of the same fields."""


_LINES = msgspec.json.Decoder(list[RecordedLine])
_NAMED_LINES = msgspec.json.Decoder(list[NamedRecordedLine])


def decode_lines(raw: bytes) -> list[RecordedLine]:
    """A settlement's recorded lines, in either form (one settlement's are all of one: they
    are encoded together)."""
    try:
        return _LINES.decode(raw)
    except msgspec.ValidationError:
        named = _NAMED_LINES.decode(raw)
    return [RecordedLine(*msgspec.structs.astuple(line)) for line in named]


class SettlementRecord(msgspec.Struct, gc=False):
    """One decided settlement, ready for the record. `lines` and `answer` are JSON already
    (the gate's arrive so on the topic and go to PostgreSQL as they came)."""

    settlement_id: str
    institution_id: str
    settled_at: dt.datetime
    patient_ref: str | None
    source: str
    body_hash: bytes
    enforced: bool
    outcome: str  # pay | partial | reject
    lines: bytes
    answer: bytes
    payments: list[Payment]
    claims: list[ClaimRow]
    flags: list[FlagRecord]


class SettlementView(msgspec.Struct, frozen=True, gc=False):
    """What a replay, a reversal or a read needs of a recorded settlement."""

    settlement_id: str
    institution_id: str
    patient_ref: str | None
    body_hash: bytes
    lines: list[RecordedLine]
    answer: bytes
    settled_at: dt.datetime

    def payments(self) -> list[Payment]:
        return [Payment(code, line.line_no, units, duplicate)
                for line in self.lines for code, units, duplicate in line.paid_codes]

    def reversed_lines(self, line_sets: list[list[int] | None]) -> set[int]:
        """The lines its reversals so far gave back (a set of None: every line)."""
        every = {line.line_no for line in self.lines}
        done: set[int] = set()
        for line_nos in line_sets:
            done |= every if line_nos is None else set(line_nos)
        return done


class ReversalRecord(msgspec.Struct, gc=False):
    """A reversal as the record keeps it; `released` are [code, line_no, units]."""

    reversal_id: str
    settlement_id: str
    institution_id: str
    patient_ref: str | None
    line_nos: list[int] | None
    reversed_at: dt.datetime
    released: list[tuple[str, int, int | None]]
    answer: bytes
