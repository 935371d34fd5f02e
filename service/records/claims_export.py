"""The record's claims as the first-seen set's rebuild reads them (service/firstseen/rebuild.py):
every code paid now, in one snapshot, as fast as PostgreSQL can stream it.

Every claim comes in one scan, as plain columns over COPY (FORMAT binary): no join and no
per-row function or concatenation in SQL, so PostgreSQL only scans and sends. Sending is most
of its work, so the partitions can be read by several connections at once, all in one
snapshot (as `pg_dump --jobs` does). The rebuilder resolves institution numbers, addresses and
encodes each code in compiled code (service/firstseen/bucket_loader.py); split packs (few) add
the lines that sold from them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg

# These columns, in this order and these types, are what service/firstseen/bucket_loader.py
# parses.
_CLAIMS = """
SELECT code, settlement_id, line_no, institution_id, paid_at, units_used, pack_size FROM {}
"""
# Names as PostgreSQL prints a regclass: quoted where they need it, so safe to put in SQL.
_PARTITIONS = """
SELECT inhrelid::regclass::text FROM pg_inherits
WHERE inhparent = 'code_claims'::regclass ORDER BY inhrelid
"""
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]+")
_INSTITUTION_NUMBERS = "SELECT institution_id, number FROM institutions"
# The lines that sold units from each open split pack, minus those reversed since, in a
# stable order (so two rebuilds write the same bytes).
_SPLIT_SELLERS = """
SELECT e.code, e.settlement_id, e.line_no FROM code_events e
WHERE e.code = ANY($1::text[]) AND e.type = 'payment' AND e.units IS NOT NULL
  AND NOT e.duplicate
  AND NOT EXISTS (SELECT 1 FROM code_events r WHERE r.code = e.code AND r.type = 'reversal'
                  AND r.settlement_id = e.settlement_id AND r.line_no = e.line_no)
ORDER BY e.event_at, e.recorded_at, e.settlement_id, e.line_no
"""


@asynccontextmanager
async def snapshot(
    connection: asyncpg.Connection, others: Sequence[asyncpg.Connection] = ()
) -> AsyncIterator[None]:
    """One read-only snapshot for every read of a rebuild, on `connection` and `others`
    alike: a claim that moves between whole and split while it reads is seen once, on one
    side, whichever connection reads it."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            connection.transaction(isolation="repeatable_read", readonly=True))
        if others:
            name = await connection.fetchval("SELECT pg_export_snapshot()")
            if not _SNAPSHOT_ID.fullmatch(name):  # it goes into SQL as a literal
                raise RuntimeError(f"PostgreSQL exported an unexpected snapshot id {name!r}")
        for other in others:
            await stack.enter_async_context(
                other.transaction(isolation="repeatable_read", readonly=True))
            await other.execute(f"SET TRANSACTION SNAPSHOT '{name}'")
        yield


async def claim_tables(connection: asyncpg.Connection) -> list[str]:
    """The partitions of code_claims (code_claims itself if it has none), to share out
    between connections."""
    return [row[0] for row in await connection.fetch(_PARTITIONS)] or ["code_claims"]


async def institution_numbers(connection: asyncpg.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in await connection.fetch(_INSTITUTION_NUMBERS)}


async def copy_claims(
    connection: asyncpg.Connection, sink: Callable[[bytes], Awaitable[None]],
    tables: Sequence[str] = ("code_claims",),
) -> None:
    """Every claim of `tables` (from `claim_tables`) as one COPY (FORMAT binary) stream,
    handed to `sink` in chunks cut anywhere (rows may straddle two chunks)."""
    query = " UNION ALL ".join(_CLAIMS.format(table) for table in tables)
    await connection.copy_from_query(query, output=sink, format="binary")


async def split_sellers(connection: asyncpg.Connection, codes: list[str]) -> list[Any]:
    """(code, settlement_id, line_no) of every line that sold units from these packs."""
    rows: list[Any] = await connection.fetch(_SPLIT_SELLERS, codes)
    return rows
