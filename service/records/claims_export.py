"""The record's claims as the first-seen set's rebuild reads them (service/firstseen/rebuild.py):
every code paid now, in one snapshot, as fast as PostgreSQL can stream it.

Whole packs (nearly all of the set) come as plain columns over COPY (FORMAT binary): no
per-row function or concatenation in SQL, so PostgreSQL only scans, joins and sends; the
rebuilder addresses and encodes each code in compiled code (service/firstseen/bucket_core.h).
Split packs (few) come as rows, with the lines that sold units from each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

# The columns, in this order and these types, are what service/firstseen/bucket_loader.py
# parses: code text, settlement_id text, line_no int4, institution number int8, paid_at
# timestamptz.
_WHOLE_CLAIMS = """
SELECT c.code, c.settlement_id, c.line_no, i.number, c.paid_at
FROM code_claims c JOIN institutions i USING (institution_id)
WHERE c.units_used IS NULL
"""
_SPLIT_CLAIMS = """
SELECT c.code, c.settlement_id, c.line_no, i.number, floor(extract(epoch FROM c.paid_at))::bigint,
       c.units_used, c.pack_size
FROM code_claims c JOIN institutions i USING (institution_id)
WHERE c.units_used IS NOT NULL
"""
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


async def copy_whole_claims(
    connection: asyncpg.Connection, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Every whole-pack claim as COPY (FORMAT binary) data, handed to `sink` in chunks cut
    anywhere (rows may straddle two chunks)."""
    await connection.copy_from_query(_WHOLE_CLAIMS, output=sink, format="binary")


async def split_claims(
    connection: asyncpg.Connection, chunk: int
) -> AsyncIterator[list[asyncpg.Record]]:
    """(code, settlement_id, line_no, institution number, paid_at epoch s, units_used,
    pack_size) of every split-pack claim, `chunk` rows at a time, the next chunk already
    asked for while the caller works on this one. Inside `snapshot`."""
    cursor = await connection.cursor(_SPLIT_CLAIMS)
    ahead = asyncio.ensure_future(cursor.fetch(chunk))
    try:
        while rows := await ahead:
            ahead = asyncio.ensure_future(cursor.fetch(chunk))
            await asyncio.sleep(0)  # let the request go out before the caller's CPU work
            yield rows
    finally:
        ahead.cancel()


async def split_sellers(connection: asyncpg.Connection, codes: list[str]) -> list[Any]:
    """(code, settlement_id, line_no) of every line that sold units from these packs."""
    rows: list[Any] = await connection.fetch(_SPLIT_SELLERS, codes)
    return rows
