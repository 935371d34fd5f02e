"""The SQL of code_events' monthly partitions (the function itself is migration 0019's)."""

from __future__ import annotations

import datetime as dt

import asyncpg

_ENSURE = "SELECT partition_name, rows_moved FROM tracegate_ensure_code_event_partitions($1, $2)"
_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'code_events'::regclass
"""


async def ensure_months(
    connection: asyncpg.Connection, months_ahead: int, today: dt.date
) -> list[tuple[str, int]]:
    """(partition, rows moved from the default) for every month it created, in one
    transaction: this month and `months_ahead` after it exist afterwards."""
    async with connection.transaction():
        rows = await connection.fetch(_ENSURE, months_ahead, today)
    return [(row["partition_name"], row["rows_moved"]) for row in rows]


async def partition_names(connection: asyncpg.Connection) -> list[str]:
    return [row["relname"] for row in await connection.fetch(_PARTITIONS)]
