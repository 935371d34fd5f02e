"""code_events' monthly partitions kept ahead of time. Migration 0019 creates the months to
come; `tracegate migrate`, `tracegate partitions ensure` and every running API and consumer
process (hourly, PartitionKeeper) call it again, so the record never writes a month into the
default partition for want of its table. How far ahead the partitions reach is the gauge
`tracegate_partition_months_ahead` (service/kit/metrics.py): alert well before it reaches 0."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from service.kit.clock import SHANGHAI, utcnow
from service.records import partition_repository
from service.settings import Settings

log = logging.getLogger(__name__)

_MONTHLY = re.compile(r"code_events_y(\d{4})m(\d{2})")


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    created: tuple[str, ...]  # partitions made by this call
    rows_moved: int  # rows they took over from the default partition
    months_ahead: int  # whole months after the current one with a partition, afterwards


def local_today() -> dt.date:
    """Partitions are Asia/Shanghai months, as a settlement's local day decides its month."""
    return utcnow().astimezone(SHANGHAI).date()


async def ensure_code_event_partitions(
    settings: Settings, *, months: int | None = None, today: dt.date | None = None
) -> PartitionStatus:
    """Create the current month's and the next `months` (default
    `settings.partition_months_ahead`) months' partitions that are missing (idempotent;
    callers serialise in PostgreSQL)."""
    today = today or local_today()
    ahead = settings.partition_months_ahead if months is None else months
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        created = await partition_repository.ensure_months(connection, ahead, today)
        names = await partition_repository.partition_names(connection)
    finally:
        await connection.close()
    for name, moved in created:
        log.info("created partition %s (%d rows moved from the default partition)", name, moved)
    return PartitionStatus(tuple(name for name, _ in created), sum(m for _, m in created),
                           months_ahead(names, today))


async def code_event_months_ahead(settings: Settings, *, today: dt.date | None = None) -> int:
    """How many whole months after the current one already have their partition."""
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        names = await partition_repository.partition_names(connection)
    finally:
        await connection.close()
    return months_ahead(names, today or local_today())


def months_ahead(partition_names: Iterable[str], today: dt.date) -> int:
    """Consecutive months after `today`'s with a monthly partition; -1 if even `today`'s month
    has none (its rows are going to the default partition)."""
    months = {_month_index(int(m[1]), int(m[2]))
              for m in map(_MONTHLY.fullmatch, partition_names) if m}
    current = _month_index(today.year, today.month)
    ahead = -1
    while current + ahead + 1 in months:
        ahead += 1
    return ahead


def _month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


MonthsAheadReport = Callable[[int], None]  # e.g. GateMetrics.partition_months_ahead


class PartitionKeeper:
    """Runs ensure_code_event_partitions every `settings.partition_check_interval_s` in a
    running process and reports how far ahead the partitions reach after each round (to the
    process's metrics). A failure (PostgreSQL away) is logged and tried again next round: the
    months ahead are the margin that makes a missed round harmless."""

    def __init__(self, settings: Settings, report: MonthsAheadReport) -> None:
        self.settings = settings
        self.report = report

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.ensure_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.partition_check_interval_s)

    async def ensure_once(self) -> None:
        try:
            status = await ensure_code_event_partitions(self.settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("could not keep code_events partitions ahead", exc_info=True)
            return
        self.report(status.months_ahead)


@contextlib.asynccontextmanager
async def partitions_kept(settings: Settings, report: MonthsAheadReport) -> AsyncIterator[None]:
    """A PartitionKeeper running in the background for the block (an API process's
    lifespan; a consumer runs `PartitionKeeper.run` beside its other tasks)."""
    stop = asyncio.Event()
    task = asyncio.create_task(PartitionKeeper(settings, report).run(stop))
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
