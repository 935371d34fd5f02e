"""Monthly partitions of `code_events` created ahead of time (`tracegate partitions ensure`).

The initial migration creates 2025-01 to 2027-12 and a default partition; without later months
every event lands in the default partition, whose index then grows without bound. A month is
`[local midnight of its first day, of the next month's)` in Asia/Shanghai, named
`code_events_yYYYYmMM`, as the migration names them. Idempotent: a month that exists is left
alone.

A minimal version (issue 17); issue 19 builds the partition logic proper in the records
repository under the same name, and the CLI's one call site is cli/operator/partitions.py."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.clock import SHANGHAI, utcnow
from service.kit.errors import Conflict


class DefaultPartitionHoldsMonth(Conflict):
    code = "DEFAULT_PARTITION_HOLDS_MONTH"


@dataclass(frozen=True, slots=True)
class Month:
    first_day: dt.date

    @property
    def name(self) -> str:
        return f"code_events_y{self.first_day:%Y}m{self.first_day:%m}"

    def next(self) -> Month:
        year, month = divmod(self.first_day.month, 12)
        return Month(dt.date(self.first_day.year + year, month + 1, 1))

    def start(self) -> dt.datetime:
        """Local midnight of the first day (Asia/Shanghai)."""
        return dt.datetime.combine(self.first_day, dt.time(), SHANGHAI)


def months_from(now: dt.datetime, count: int) -> list[Month]:
    """This month (Asia/Shanghai) and the `count - 1` after it."""
    local = now.astimezone(SHANGHAI)
    months = [Month(dt.date(local.year, local.month, 1))]
    while len(months) < count:
        months.append(months[-1].next())
    return months


async def ensure_code_event_partitions(
    session: AsyncSession, months_ahead: int = 12, now: dt.datetime | None = None
) -> list[str]:
    """Create the partitions of this month and the `months_ahead` after it that are missing;
    returns the names created. A month whose events already sit in the default partition
    cannot be attached without moving them: that is refused in words, nothing half done."""
    existing = await _partition_names(session)
    created = []
    for month in months_from(now or utcnow(), months_ahead + 1):
        if month.name in existing:
            continue
        if await _default_holds(session, month):
            raise DefaultPartitionHoldsMonth(
                f"events of {month.first_day:%Y-%m} are already in code_events_default; move "
                f"them out before {month.name} can be created")
        await _create(session, month)
        created.append(month.name)
    return created


# DDL takes no bind parameters: PostgreSQL's format() quotes the name (%I) and the bounds (%L)
# from bound values, and the statement it returns is run as it stands.
_CREATE_PARTITION = text(
    "SELECT format('CREATE TABLE IF NOT EXISTS %I PARTITION OF code_events "
    "FOR VALUES FROM (%L) TO (%L)', CAST(:name AS text), CAST(:start AS timestamptz), "
    "CAST(:end AS timestamptz))")


async def _create(session: AsyncSession, month: Month) -> None:
    values = {"name": month.name, "start": month.start(), "end": month.next().start()}
    statement = (await session.execute(_CREATE_PARTITION, values)).scalar_one()
    await session.execute(text(statement))


async def _partition_names(session: AsyncSession) -> set[str]:
    rows = await session.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'code_events'::regclass"))
    return {name for (name,) in rows}


async def _default_holds(session: AsyncSession, month: Month) -> bool:
    found = await session.execute(
        text("SELECT EXISTS (SELECT 1 FROM code_events_default "
             "WHERE event_at >= :start AND event_at < :end)"),
        {"start": month.start(), "end": month.next().start()})
    return bool(found.scalar_one())
