"""The rebuild streams the record's plain columns over COPY and addresses codes and encodes
whole-pack values (owner token, institution number, day) in compiled code; the consumers and
the gate do both in Python. Both must put the same bytes in the same place, or a rebuilt set
would miss every claim or take every replay for a duplicate. Here the record's own stream
goes through the compiled loader (tests/unit/test_bucket_loader.py holds it equal to the
pure-Python reference on generated streams)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen._bucket_loader import BucketLoader
from service.firstseen.encoding import Layout, encode_state
from service.records import claims_export
from service.settings import Settings
from tests import factories as f

UTC, BEIJING = dt.UTC, dt.timezone(dt.timedelta(hours=8))
# Edges the two encodings could disagree on: a second before midnight UTC (the day is floored,
# not rounded), an instant in +08:00, before the 2020 epoch (clamped to day 0), non-ASCII and
# ':' in settlement ids, and institution numbers past 2**31 (an unsigned u32 in Python).
CASES = [
    ("S-1", 1, 2**30 + 7, dt.datetime(2025, 7, 1, 23, 59, 59, 900_000, tzinfo=UTC)),
    ("结算-二", 12, 2**31 + 5, dt.datetime(2025, 7, 2, 7, 30, tzinfo=BEIJING)),
    ("S:with:colons", 3, 2**32 - 1, dt.datetime(2019, 12, 31, 12, tzinfo=UTC)),
    ("S-long-" + "x" * 50, 999, 2**29 + 1, dt.datetime(2031, 1, 1, tzinfo=UTC)),
]
# Layouts with a group count that is not a power of two, and the most bucket bits allowed.
LAYOUTS = [Layout(13, 16), Layout(0, 7), Layout(28, 16_384), Layout(5, 1)]


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    transaction = connection.transaction()
    await transaction.start()
    yield connection
    await transaction.rollback()  # nothing this test writes is ever visible to the others
    await connection.close()


async def test_postgres_encodes_whole_packs_exactly_as_python(
    connection: asyncpg.Connection,
) -> None:
    layout, expected = Layout(13, 16), set()
    for sid, line_no, number, paid_at in CASES:
        institution, code = f.institution_id("E"), f.cn20()
        await _institution(connection, institution, number)
        await _claim(connection, institution, code, sid, line_no, paid_at)
        value = encode_state(CodeState(owner_token(sid, line_no), number, int(paid_at.timestamp())))
        expected.add((*layout.locate(code), value))
    buckets = await _rebuilt_buckets(connection, layout)
    for group, bucket, field, value in expected:
        assert buckets[layout.bucket_key(group, bucket)][field] == value


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
async def test_postgres_addresses_codes_exactly_as_python(
    connection: asyncpg.Connection, layout: Layout
) -> None:
    # fresh codes (other tests' claims share the record), as the record keeps them: national,
    # GS1 element strings, characters beyond digits
    codes = [f.cn20(), "0106901234567892" + "21" + f.gs1_serial(), f"(01)%/x-{f.gs1_serial()}"]
    institution, number = f.institution_id("A"), 2**31 + secrets.randbelow(2**30)
    sid, paid_at = f.settlement_id(), dt.datetime(2025, 7, 1, tzinfo=UTC)
    value = encode_state(CodeState(owner_token(sid, 1), number, int(paid_at.timestamp())))
    await _institution(connection, institution, number)
    for code in codes:
        await _claim(connection, institution, code, sid, 1, paid_at)
    buckets = await _rebuilt_buckets(connection, layout)
    for code in codes:
        group, bucket, field = layout.locate(code)
        assert buckets[layout.bucket_key(group, bucket)][field] == value, code


async def _institution(connection: asyncpg.Connection, institution: str, number: int) -> None:
    await connection.execute(
        "INSERT INTO institutions (institution_id, name, kind, region, number) "
        "OVERRIDING SYSTEM VALUE VALUES ($1, 'encoding test', 'retail_pharmacy', '110000', $2)",
        institution, number)


async def _claim(
    connection: asyncpg.Connection, institution: str, code: str, sid: str, line_no: int,
    paid_at: dt.datetime,
) -> None:
    await connection.execute(
        "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
        "first_seen_at) VALUES ($1, $2, $3, $4, $5, $5)", code, sid, line_no, institution,
        paid_at)


async def _rebuilt_buckets(
    connection: asyncpg.Connection, layout: Layout
) -> dict[str, dict[bytes, bytes]]:
    """Every bucket the rebuild would write from the record's whole claims as they stream
    (other tests' claims among them), read back out of its HSET commands."""
    numbers = await claims_export.institution_numbers(connection)
    loader = BucketLoader(layout.bucket_bits, layout.slot_groups, numbers)

    async def sink(data: bytes) -> None:
        loader.feed(data)

    await claims_export.copy_claims(connection, sink)
    loader.finish()
    buckets: dict[str, dict[bytes, bytes]] = {}
    for group in range(layout.slot_groups):
        for key, pairs in _hsets(loader.commands(group, restore=False)[0]):
            buckets[key] = pairs
    return buckets


def _hsets(resp: bytes) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """(key, fields) of each `HSET key field value …` in RESP."""
    position = 0
    while position < len(resp):
        end = resp.index(b"\r\n", position)
        count, position = int(resp[position + 1 : end]), end + 2
        arguments = []
        for _ in range(count):
            end = resp.index(b"\r\n", position)
            size = int(resp[position + 1 : end])
            arguments.append(resp[end + 2 : end + 2 + size])
            position = end + 4 + size
        assert arguments[0] == b"HSET"
        yield arguments[1].decode(), dict(zip(arguments[2::2], arguments[3::2], strict=True))


async def test_the_rebuild_reads_each_partition_once_in_a_snapshot(settings: Settings) -> None:
    """The rebuild reads the partitions over several connections, each in a snapshot of its
    own, the first's taken last (where it reads institutions): a claim another connection
    sees names an institution the first knows. A claim committed once the others' snapshots
    are taken is not seen by them; between them the partitions are every claim, each once."""
    before, after = f.cn20(), f.cn20()
    writer, *readers = [await asyncpg.connect(settings.asyncpg_dsn) for _ in range(3)]
    institution, late = f.institution_id("S"), f.institution_id("L")
    paid = dt.datetime(2025, 7, 1, tzinfo=UTC)
    try:
        await _institution(writer, institution, 2**30 + secrets.randbelow(2**29))
        await _claim(writer, institution, before, f.settlement_id(), 1, paid)
        async with claims_export.snapshots(readers[0], readers[1:]):
            await _institution(writer, late, 2**30 + secrets.randbelow(2**29))
            await _claim(writer, late, after, f.settlement_id(), 1, paid)
            numbers = await claims_export.institution_numbers(readers[0])  # its snapshot now
            assert {institution, late} <= set(numbers)
            seen = await readers[1].fetch("SELECT code FROM code_claims WHERE code = ANY($1)",
                                          [before, after])
            assert [row[0] for row in seen] == [before]
            partitions = await claims_export.claim_partitions(readers[0])
            assert len(partitions) > 1  # to share out
            assert sum([await _count(readers[0], partition) for partition in partitions]) == (
                await readers[0].fetchval("SELECT count(*) FROM code_claims"))
    finally:
        await writer.execute("DELETE FROM code_claims WHERE code = ANY($1)", [before, after])
        await writer.execute("DELETE FROM institutions WHERE institution_id = ANY($1)",
                             [institution, late])
        for connection in (writer, *readers):
            await connection.close()


async def _count(connection: asyncpg.Connection, partition: claims_export.Partition) -> int:
    """Rows in one partition's COPY stream, as the rebuild reads it."""
    loader = BucketLoader(0, 1, await claims_export.institution_numbers(connection))

    async def sink(data: bytes) -> None:
        loader.feed(data)

    await claims_export.copy_claims(connection, sink, partition)
    loader.finish()
    return loader.buffered + len(loader.take_split()) + loader.unknown_institutions
