"""Writing decided settlements to the record in one transaction (the caller commits)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.decisions.schemas import FlagKind
from service.flags import repository as flags_repository
from service.flags.service import flag_id
from service.records import repository
from service.records.repository import ClaimOwner
from service.records.schemas import ClaimRow, SettlementRecord


async def record_settlements(
    session: AsyncSession, records: Sequence[SettlementRecord], detected_at: dt.datetime
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Record what is new; returns the flags recorded for the first time (to publish) and the
    payments per institution (for `count_payments`). A settlement already recorded is a
    redelivery: none of its effects are written again."""
    new_ids = await repository.insert_settlements(session, records)
    # One record per new settlement: a copy redelivered within the same batch is not new.
    fresh = list({r.settlement_id: r for r in reversed(records) if r.settlement_id in new_ids}
                 .values())[::-1]
    await repository.insert_code_events(session, [r for f in fresh for r in _payment_rows(f)])
    arbiter_flags = await _claim(session, fresh, detected_at)
    flags = [flag for record in fresh for flag in record.flags] + arbiter_flags
    return await flags_repository.insert_flags(session, flags), Counter(_payers(fresh))


async def count_payments(session: AsyncSession, payments: Counter[str]) -> None:
    """Last in a transaction, in a fixed order: the hot counter rows are then locked only
    by transactions about to commit, so two consumers cannot deadlock on them."""
    await repository.add_payment_counts(session, payments)


def _payment_rows(record: SettlementRecord) -> list[dict[str, Any]]:
    return [
        {
            "code": p.canonical, "event_at": record.settled_at, "type": "payment",
            "settlement_id": record.settlement_id, "line_no": p.line_no,
            "institution_id": record.institution_id, "patient_ref": record.patient_ref,
            "units": p.units, "duplicate": p.duplicate,
        }
        for p in record.payments
    ]


def _payers(records: Sequence[SettlementRecord]) -> list[str]:
    return [record.institution_id for record in records for _ in record.payments]


async def _claim(
    session: AsyncSession, records: Sequence[SettlementRecord], detected_at: dt.datetime
) -> list[dict[str, Any]]:
    """Claims go through PostgreSQL's unique key: a whole-pack claim that finds another owner
    there was not the first payment after all, whatever Redis said, and is flagged."""
    whole = [(r, c) for r in records for c in r.claims if c.units is None]
    split = [(r, c) for r in records for c in r.claims if c.units is not None]
    taken = await repository.insert_whole_claims(session, whole)
    await repository.add_split_units(session, split)
    if not taken:
        return []
    owners = await repository.claim_owners(session, taken)
    losers = [
        (r, c) for r, c in whole
        if c.code in taken and owners[c.code].key != (r.settlement_id, c.line_no)
    ]
    await repository.mark_duplicate_payments(
        session, [(c.code, r.settlement_id, c.line_no) for r, c in losers]
    )
    return [_arbiter_flag(r, c, owners[c.code], detected_at) for r, c in losers]


def _arbiter_flag(
    record: SettlementRecord, claim: ClaimRow, owner: ClaimOwner, detected_at: dt.datetime
) -> dict[str, Any]:
    kind = FlagKind.DUPLICATE_PAYMENT.value
    return {
        "flag_id": flag_id(kind, record.settlement_id, claim.line_no, claim.code),
        "kind": kind, "severity": "high", "trace_code": claim.code,
        "institution_id": record.institution_id, "settlement_id": record.settlement_id,
        "line_no": claim.line_no, "settled_at": record.settled_at.isoformat(),
        "detected_at": detected_at.isoformat(), "patient_ref": record.patient_ref,
        "first_payment": owner.first_payment.to_json(),
    }
