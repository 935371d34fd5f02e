"""The record's claims as the first-seen set's rebuild reads them (service/firstseen/rebuild.py):
every code paid now, in one snapshot, as fast as PostgreSQL can stream it.

Every claim comes in one scan, as plain columns over COPY (FORMAT binary): no join and no
per-row function or concatenation in SQL, so PostgreSQL only scans and sends. The rebuilder
resolves institution numbers, addresses and encodes each code in compiled code
(service/firstseen/bucket_loader.py); split packs (few) add the lines that sold from them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

# These columns, in this order and these types, are what service/firstseen/bucket_loader.py
# parses.
_CLAIMS = """
SELECT code, settlement_id, line_no, institution_id, paid_at, units_used, pack_size
FROM code_claims
"""
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
async def snapshot(connection: asyncpg.Connection) -> AsyncIterator[None]:
    """One read-only snapshot for every read of a rebuild: a claim that moves between whole
    and split while it reads is seen once, on one side."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        yield


async def institution_numbers(connection: asyncpg.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in await connection.fetch(_INSTITUTION_NUMBERS)}


async def copy_claims(
    connection: asyncpg.Connection, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Every claim as COPY (FORMAT binary) data, handed to `sink` in chunks cut anywhere (rows
    may straddle two chunks)."""
    await connection.copy_from_query(_CLAIMS, output=sink, format="binary")


async def split_sellers(connection: asyncpg.Connection, codes: list[str]) -> list[Any]:
    """(code, settlement_id, line_no) of every line that sold units from these packs."""
    rows: list[Any] = await connection.fetch(_SPLIT_SELLERS, codes)
    return rows
