"""All SQL over the record tables. Writes are multi-row and idempotent on natural keys: a
redelivered batch inserts nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import asyncpg
from sqlalchemy import Select, bindparam, delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.decisions.schemas import FirstPayment
from service.kit.bulk_insert import insert_rows
from service.kit.database import any_of, core_table
from service.records.models import (
    CodeClaim,
    CodeEvent,
    InstitutionStats,
    Reversal,
    Settlement,
)
from service.records.schemas import ClaimRow, SettlementRecord, SettlementView

_ASYNCPG = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


async def payment_count(session: AsyncSession, institution_id: str) -> int:
    query = select(InstitutionStats.payments).where(
        InstitutionStats.institution_id == institution_id
    )
    return (await session.execute(query)).scalar_one_or_none() or 0


async def first_payments(session: AsyncSession, codes: Sequence[str]) -> dict[str, FirstPayment]:
    query = select(
        CodeClaim.code, CodeClaim.settlement_id, CodeClaim.institution_id, CodeClaim.paid_at
    ).where(any_of(CodeClaim.code, codes))
    rows = (await session.execute(query)).all()
    return {code: FirstPayment(sid, iid, paid_at) for code, sid, iid, paid_at in rows}


async def insert_settlements(
    session: AsyncSession, records: Sequence[SettlementRecord]
) -> set[str]:
    """Returns the ids that were new: only their effects may be written."""
    rows = [_settlement_row(record) for record in records]
    return set(await insert_rows(session, core_table(Settlement), rows, "settlement_id"))


def _settlement_row(record: SettlementRecord) -> dict[str, Any]:
    return {
        "settlement_id": record.settlement_id, "institution_id": record.institution_id,
        "settled_at": record.settled_at, "patient_ref": record.patient_ref,
        "source": record.source, "body_hash": record.body_hash, "decision": record.decision,
        "enforced": record.enforced, "lines": record.lines, "answer": record.answer,
    }


async def insert_code_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await insert_rows(session, core_table(CodeEvent), rows)


async def insert_whole_claims(
    session: AsyncSession, record_claims: list[tuple[SettlementRecord, ClaimRow]]
) -> set[str]:
    """First payments of whole packs; returns the codes whose claim already existed."""
    if not record_claims:
        return set()
    rows = [_claim_row(record, claim) for record, claim in record_claims]
    inserted = set(await insert_rows(session, core_table(CodeClaim), rows, "code"))
    return {row["code"] for row in rows} - inserted


def _claim_row(record: SettlementRecord, claim: ClaimRow) -> dict[str, Any]:
    return {
        "code": claim.code, "settlement_id": record.settlement_id, "line_no": claim.line_no,
        "institution_id": record.institution_id, "paid_at": record.settled_at,
        "units_used": claim.units, "pack_size": claim.pack_size,
        "first_seen_at": record.settled_at,
    }


async def add_split_units(
    session: AsyncSession, record_claims: list[tuple[SettlementRecord, ClaimRow]]
) -> None:
    """Units add up as deltas, so consumers writing in any order reach the same total. Sales
    of one pack within a batch are summed first (one row may be updated once per statement);
    the earliest sale in the batch opens the pack."""
    rows: dict[str, dict[str, Any]] = {}
    for record, claim in record_claims:
        row = rows.setdefault(claim.code, {**_claim_row(record, claim), "units_used": 0})
        row["units_used"] += claim.units or 0
    if not rows:
        return
    statement = insert(core_table(CodeClaim))
    statement = statement.on_conflict_do_update(
        index_elements=[CodeClaim.code],
        set_={"units_used": CodeClaim.units_used + statement.excluded.units_used},
    )
    await session.execute(statement, list(rows.values()))


@dataclass(frozen=True, slots=True)
class ClaimOwner:
    settlement_id: str
    line_no: int
    first_payment: FirstPayment

    @property
    def key(self) -> tuple[str, int]:
        return (self.settlement_id, self.line_no)


async def claim_owners(session: AsyncSession, codes: Iterable[str]) -> dict[str, ClaimOwner]:
    query = select(
        CodeClaim.code, CodeClaim.settlement_id, CodeClaim.line_no, CodeClaim.institution_id,
        CodeClaim.paid_at,
    ).where(any_of(CodeClaim.code, codes))
    return {
        code: ClaimOwner(sid, line, FirstPayment(sid, iid, paid_at))
        for code, sid, line, iid, paid_at in (await session.execute(query)).all()
    }


async def mark_duplicate_payments(
    session: AsyncSession, keys: list[tuple[str, str, int]]
) -> None:
    """Payments the arbiter found were not first after all (Redis had lost the claim)."""
    if keys:
        columns = tuple_(CodeEvent.code, CodeEvent.settlement_id, CodeEvent.line_no)
        await session.execute(
            update(CodeEvent).where(columns.in_(keys), CodeEvent.type == "payment")
            .values(duplicate=True)
        )


async def add_payment_counts(session: AsyncSession, counts: Counter[str]) -> None:
    if not counts:
        return
    rows = [{"institution_id": iid, "payments": n} for iid, n in sorted(counts.items())]
    statement = insert(core_table(InstitutionStats))
    statement = statement.on_conflict_do_update(
        index_elements=[InstitutionStats.institution_id],
        set_={"payments": InstitutionStats.payments + statement.excluded.payments},
    )
    await session.execute(statement, rows)


async def get_settlement(
    record: AsyncSession | asyncpg.Pool, settlement_id: str
) -> SettlementView | None:
    """Through a session inside a unit of work (a consumer's batch reads what it has written),
    or through the lookup pool (the API: committed rows, without a session's cost)."""
    if isinstance(record, AsyncSession):
        params = {"settlement_id": settlement_id}
        row: Any = (await record.execute(_settlement_by_id(), params)).one_or_none()
    else:
        row = await record.fetchrow(_settlement_by_id_sql(), settlement_id)
    return None if row is None else SettlementView(*row)


@cache
def _settlement_by_id() -> Select[tuple[str, str, str | None, bytes, Any, Any]]:
    """Built once: the gate asks this on every call, and building the statement cost as much
    as running it."""
    return select(
        Settlement.settlement_id, Settlement.institution_id, Settlement.patient_ref,
        Settlement.body_hash, Settlement.lines, Settlement.answer,
    ).where(Settlement.settlement_id == bindparam("settlement_id"))


@cache
def _settlement_by_id_sql() -> str:
    """The same statement as asyncpg takes it (`$1`)."""
    return str(_settlement_by_id().compile(dialect=_ASYNCPG))


async def recorded_settlement_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Which of these settlements the record already holds (one query)."""
    if not ids:
        return set()
    query = select(Settlement.settlement_id).where(any_of(Settlement.settlement_id, set(ids)))
    return set((await session.execute(query)).scalars())


async def get_reversal(session: AsyncSession, reversal_id: str) -> Reversal | None:
    query = select(Reversal).where(Reversal.reversal_id == reversal_id)
    return (await session.execute(query)).scalar_one_or_none()


async def reversal_line_sets(session: AsyncSession, settlement_id: str) -> list[list[int] | None]:
    query = select(Reversal.line_nos).where(Reversal.settlement_id == settlement_id)
    return list((await session.execute(query)).scalars())


async def insert_reversal(session: AsyncSession, row: dict[str, Any]) -> bool:
    """True when the reversal is new (a redelivery inserts nothing and must write nothing)."""
    table = core_table(Reversal)
    statement = insert(table).on_conflict_do_nothing().returning(table.c.reversal_id)
    return (await session.execute(statement, [row])).first() is not None


async def release_claims(
    session: AsyncSession, settlement_id: str, whole: Sequence[str],
    split_units: Sequence[tuple[str, int]],
) -> None:
    if whole:
        await session.execute(
            delete(CodeClaim).where(
                CodeClaim.code.in_(whole), CodeClaim.settlement_id == settlement_id
            )
        )
    for code, units in split_units:
        await session.execute(
            update(CodeClaim).where(CodeClaim.code == code)
            .values(units_used=CodeClaim.units_used - units)
        )
    if split_units:
        await session.execute(
            delete(CodeClaim).where(
                CodeClaim.code.in_([code for code, _ in split_units]), CodeClaim.units_used <= 0
            )
        )


async def code_history(session: AsyncSession, code: str) -> list[CodeEvent]:
    """Every event of one code: the primary key leads with the code, so each monthly
    partition answers with one index probe."""
    query = select(CodeEvent).where(CodeEvent.code == code).order_by(
        CodeEvent.event_at, CodeEvent.recorded_at
    )
    return list((await session.execute(query)).scalars())
