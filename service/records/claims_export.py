"""The record's claims as the first-seen set's rebuild reads them (service/firstseen/rebuild.py):
every code paid now, in one snapshot, as fast as PostgreSQL can stream it.

Every claim comes in one scan, as plain columns over COPY (FORMAT binary): no join and no
per-row function or concatenation in SQL, so PostgreSQL only scans and sends. Sending is most
of its work, so the partitions can be read by several connections at once. The rebuilder
resolves institution numbers, addresses and encodes each code in compiled code
(service/firstseen/bucket_loader.py); split packs (few) add the lines that sold from them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NamedTuple

import asyncpg

# These columns, in this order and these types, are what service/firstseen/bucket_loader.py
# parses.
_COLUMNS = ["code", "settlement_id", "line_no", "institution_id", "paid_at", "units_used",
            "pack_size"]
_CLAIMS = ("SELECT code, settlement_id, line_no, institution_id, paid_at, units_used, pack_size "
           "FROM code_claims")
_PARTITIONS = """
SELECT n.nspname, c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = 'code_claims'::regclass ORDER BY c.relname
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


class Partition(NamedTuple):
    schema: str
    name: str


@asynccontextmanager
async def snapshots(
    first: asyncpg.Connection, others: Sequence[asyncpg.Connection] = ()
) -> AsyncIterator[None]:
    """A read-only snapshot on each connection, `first`'s taken last: read institutions there
    first and they include every institution a claim the others read can name. Each claim is
    read once, by the connection given its partition (partitioned by code), so a claim that
    moves between whole and split while the rebuild reads is seen on one side only. (One
    snapshot shared by all would need SET TRANSACTION SNAPSHOT, which takes no parameter.)"""
    async with AsyncExitStack() as stack:
        for connection in (*others, first):
            await stack.enter_async_context(
                connection.transaction(isolation="repeatable_read", readonly=True))
            if connection is not first:
                await connection.execute("SELECT 1")  # its snapshot is taken here
        yield


async def claim_partitions(connection: asyncpg.Connection) -> list[Partition]:
    """The partitions of code_claims, to share out between connections (none: read it
    whole with one)."""
    return [Partition(*row) for row in await connection.fetch(_PARTITIONS)]


async def institution_numbers(connection: asyncpg.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in await connection.fetch(_INSTITUTION_NUMBERS)}


async def copy_claims(
    connection: asyncpg.Connection, sink: Callable[[bytes], Awaitable[None]],
    partition: Partition | None = None,
) -> None:
    """Every claim (of one partition) as one COPY (FORMAT binary) stream, handed to `sink` in
    chunks cut anywhere (rows may straddle two chunks)."""
    if partition is None:
        await connection.copy_from_query(_CLAIMS, output=sink, format="binary")
    else:  # asyncpg quotes the names
        await connection.copy_from_table(partition.name, schema_name=partition.schema,
                                         columns=_COLUMNS, output=sink, format="binary")


async def split_sellers(connection: asyncpg.Connection, codes: list[str]) -> list[Any]:
    """(code, settlement_id, line_no) of every line that sold units from these packs."""
    rows: list[Any] = await connection.fetch(_SPLIT_SELLERS, codes)
    return rows
