"""code_events' monthly partitions kept ahead (migration 0019, service/records/partitions.py),
each case on a migrated database of its own so the months it makes touch nobody else."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cli.migrate import upgrade_to_head
from service.kit.clock import local_midnight
from service.records.partitions import code_event_months_ahead, ensure_code_event_partitions
from service.settings import Settings
from tests.harness import scratch_database
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
# 0001 makes 2025-01 .. 2027-12: ensuring from here on has months to create.
LATE_2027 = dt.date(2027, 11, 15)


@pytest.fixture
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with scratch_database(settings) as scratch:
        await asyncio.to_thread(upgrade_to_head, scratch.database_url)
        yield scratch


async def _event(connection: asyncpg.Connection, code: str, at: dt.datetime) -> None:
    await connection.execute(
        "INSERT INTO code_events (code, event_at, type, settlement_id, line_no, institution_id)"
        " VALUES ($1, $2, 'payment', $1, 1, 'P00000000001')", code, at)


async def _partition_of(connection: asyncpg.Connection, code: str) -> str:
    name: str = await connection.fetchval(
        "SELECT tableoid::regclass::text FROM code_events WHERE code = $1", code)
    return name


async def test_months_ahead_are_created_once(own: Settings) -> None:
    first = await ensure_code_event_partitions(own, today=LATE_2027)
    assert first.created == ("code_events_y2028m01", "code_events_y2028m02")
    assert first.months_ahead == 3
    again = await ensure_code_event_partitions(own, today=LATE_2027)
    assert again.created == ()
    assert again.months_ahead == 3
    assert await code_event_months_ahead(own, today=LATE_2027) == 3
    assert await code_event_months_ahead(own, today=dt.date(2028, 2, 29)) == 0
    assert await code_event_months_ahead(own, today=dt.date(2028, 3, 1)) == -1


async def test_a_month_new_partition_takes_its_rows_from_the_default(own: Settings) -> None:
    """A settlement dated past the last month went to the default partition; its month's
    partition is made with the row moved into it (PostgreSQL would refuse to create it over
    rows in the default). A row from before the first month stays where it is."""
    connection = await asyncpg.connect(own.asyncpg_dsn)
    try:
        # 2028-05-01 00:30 in Shanghai is still April in UTC: the local month decides
        await _event(connection, "FUTURE", local_midnight(dt.date(2028, 5, 1)) +
                     dt.timedelta(minutes=30))
        await _event(connection, "ANCIENT", local_midnight(dt.date(2024, 6, 1)))
        assert await _partition_of(connection, "FUTURE") == "code_events_default"
        status = await ensure_code_event_partitions(own, today=dt.date(2028, 3, 10))
        assert status.created == tuple(f"code_events_y2028m{m:02d}" for m in range(3, 7))
        assert status.rows_moved == 1
        assert await _partition_of(connection, "FUTURE") == "code_events_y2028m05"
        assert await _partition_of(connection, "ANCIENT") == "code_events_default"
        assert await connection.fetchval("SELECT count(*) FROM code_events") == 2
        # the new partition is a real one: it took the table's hash index on the code
        indexes = await connection.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'code_events_y2028m05'")
        assert [row["indexdef"].split(" USING ")[1] for row in indexes] == [
            "hash (code)"]
    finally:
        await connection.close()


async def test_concurrent_keepers_do_not_collide(own: Settings) -> None:
    """Every API worker and consumer keeps the months: at once, each month is made once."""
    results = await asyncio.gather(
        *(ensure_code_event_partitions(own, today=LATE_2027) for _ in range(4)))
    made = [name for result in results for name in result.created]
    assert sorted(made) == ["code_events_y2028m01", "code_events_y2028m02"]


async def test_the_cli_ensures_and_says_how_far_ahead(own: Settings) -> None:
    env = {**os.environ, "TRACEGATE_DATABASE_URL": own.database_url,
           "TRACEGATE_PARTITION_MONTHS_AHEAD": "24"}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cli.main", "partitions", "ensure"], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "24 months ahead" in result.stdout
    assert "created code_events_y" in result.stdout


async def test_metrics_show_the_months_ahead(api: httpx.AsyncClient) -> None:
    """The API's keeper runs its first round as the process starts, then hourly."""

    async def months() -> float:
        body = (await api.get("/metrics")).text
        [line] = [line for line in body.splitlines()
                  if line.startswith("tracegate_partition_months_ahead ")]
        return float(line.split()[1])

    assert await eventually(months, lambda ahead: ahead >= 3) >= 3
