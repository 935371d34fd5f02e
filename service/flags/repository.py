"""All SQL over the flags table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from service.flags.models import Flag, FlagHistory


async def count_by_kind(session: AsyncSession, institution_id: str) -> dict[str, int]:
    query = (
        select(Flag.kind, func.count())
        .where(Flag.institution_id == institution_id)
        .group_by(Flag.kind)
    )
    return {kind: count for kind, count in (await session.execute(query)).all()}


def flag_json(row: Flag) -> dict[str, Any]:
    """The detection, as the flags topic carries it (never its triage)."""
    return {
        "flag_id": row.flag_id, "kind": row.kind, "severity": row.severity,
        "trace_code": row.trace_code, "institution_id": row.institution_id,
        "settlement_id": row.settlement_id, "line_no": row.line_no,
        "settled_at": row.settled_at.isoformat(), "detected_at": row.detected_at.isoformat(),
        "patient_ref": row.patient_ref, "first_payment": row.first_payment,
    }


def case_json(row: Flag) -> dict[str, Any]:
    """The flag as the API shows it: the detection and where its case stands (CONTRACT §7)."""
    return {**flag_json(row), "status": row.status, "resolution": row.resolution,
            "updated_at": row.updated_at.isoformat()}


# Every transaction older than this one has finished: rows it wrote are final.
_XMIN: ColumnElement[int] = literal_column(
    "(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint", BigInteger()
)


@dataclass(frozen=True, slots=True)
class FlagFilter:
    kind: str | None = None
    institution_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    statuses: tuple[str, ...] = ()  # any of these; none = every status

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.kind is not None:
            clauses.append(Flag.kind == self.kind)
        if self.institution_id is not None:
            clauses.append(Flag.institution_id == self.institution_id)
        if self.since is not None:
            clauses.append(Flag.detected_at >= self.since)
        if self.until is not None:
            clauses.append(Flag.detected_at < self.until)
        if self.statuses:
            clauses.append(Flag.status.in_(self.statuses))
        return clauses


async def page(
    session: AsyncSession, where: FlagFilter, after: tuple[dt.datetime, int] | None, limit: int
) -> list[Flag]:
    """Keyset pagination on (detected_at, seq): stable while new flags keep arriving."""
    query = select(Flag).where(*where.clauses())
    if after is not None:
        query = query.where(tuple_(Flag.detected_at, Flag.seq) > tuple_(*after))
    query = query.order_by(Flag.detected_at, Flag.seq).limit(limit)
    return list((await session.execute(query)).scalars())


async def for_code(session: AsyncSession, code: str) -> list[Flag]:
    query = select(Flag).where(Flag.trace_code == code).order_by(Flag.detected_at, Flag.seq)
    return list((await session.execute(query)).scalars())


async def stream_position(session: AsyncSession, flag_id: str | None) -> tuple[int, int]:
    """Where a stream resumes: after a known flag, else at the oldest running transaction."""
    if flag_id is not None:
        query = select(Flag.tx, Flag.seq).where(Flag.flag_id == flag_id)
        found = (await session.execute(query)).first()
        if found is not None:
            return (found[0], found[1])
    xmin = (await session.execute(select(_XMIN))).scalar_one()
    return (int(xmin) - 1, 2**62)


async def stream_after(
    session: AsyncSession, position: tuple[int, int], where: FlagFilter, limit: int = 500
) -> list[Flag]:
    """Flags in (transaction, seq) order, only from transactions older than every running one:
    a flag whose transaction commits late has a later position, so it is never skipped."""
    query = (
        select(Flag)
        .where(tuple_(Flag.tx, Flag.seq) > tuple_(*position), Flag.tx < _XMIN, *where.clauses())
        .order_by(Flag.tx, Flag.seq)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())



async def locked_flag(session: AsyncSession, flag_id: str) -> Flag | None:
    """The flag, locked until the unit of work ends: two triage steps on one case queue up
    instead of both judging the same old status."""
    query = select(Flag).where(Flag.flag_id == flag_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_flag(session: AsyncSession, flag_id: str) -> Flag | None:
    return (await session.execute(select(Flag).where(Flag.flag_id == flag_id))).scalar_one_or_none()


async def set_status(
    session: AsyncSession, row: Flag, status: str, resolution: str | None
) -> None:
    statement = (
        update(Flag).where(Flag.flag_id == row.flag_id)
        .values(status=status, resolution=resolution, updated_at=func.now())
        .returning(Flag.updated_at)
        .execution_options(synchronize_session=False)
    )
    updated_at = (await session.execute(statement)).scalar_one()
    # What the row now holds, without marking it changed (no second UPDATE at the flush).
    for name, value in (("status", status), ("resolution", resolution),
                        ("updated_at", updated_at)):
        set_committed_value(row, name, value)


async def add_history(session: AsyncSession, entry: FlagHistory) -> None:
    session.add(entry)
    await session.flush()


async def history_of(session: AsyncSession, flag_id: str) -> list[FlagHistory]:
    query = select(FlagHistory).where(FlagHistory.flag_id == flag_id).order_by(FlagHistory.id)
    return list((await session.execute(query)).scalars())


# Literals, not parameters, so the planner can match the partial indexes' predicates.
_OPEN: ColumnElement[bool] = Flag.status != literal_column("'closed'")
_CLOSED: ColumnElement[bool] = Flag.status == literal_column("'closed'")


def _institution(institution_id: str | None) -> list[ColumnElement[bool]]:
    return [] if institution_id is None else [Flag.institution_id == institution_id]


async def open_counts(
    session: AsyncSession, institution_id: str | None, ages: Sequence[dt.timedelta]
) -> list[tuple[str, int, list[int]]]:
    """Per open status: its count, and how many were detected within each of `ages` ago
    (one scan of the open-cases index)."""
    now = func.now()
    within = [func.count().filter(Flag.detected_at > now - age) for age in ages]
    query = (
        select(Flag.status, func.count(), *within)
        .where(_OPEN, *_institution(institution_id))
        .group_by(Flag.status)
    )
    rows = (await session.execute(query)).all()
    return [(str(row[0]), int(row[1]), [int(n) for n in row[2:]]) for row in rows]


async def closed_counts(session: AsyncSession, institution_id: str | None) -> dict[str, int]:
    query = (
        select(Flag.resolution, func.count())
        .where(_CLOSED, *_institution(institution_id))
        .group_by(Flag.resolution)
    )
    return {str(resolution): count for resolution, count in (await session.execute(query)).all()}
