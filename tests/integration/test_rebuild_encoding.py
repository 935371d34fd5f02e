"""The rebuild lets PostgreSQL address codes and encode whole-pack values (owner token,
institution number, day) for speed; the consumers and the gate do both in Python. Both must
put the same bytes in the same place, or a rebuilt set would miss every claim or take every
replay for a duplicate."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen.encoding import Layout, encode_state
from service.firstseen.rebuild import _WHOLE_CLAIMS
from service.kit.redis_bulk import hset_arguments
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
        group, bucket, field = layout.locate(code)
        expected.add((group, bucket, hset_arguments(field, value)))
    assert expected <= await _rebuild_rows(connection, layout)


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
    rows = await _rebuild_rows(connection, layout)
    for code in codes:
        group, bucket, field = layout.locate(code)
        assert (group, bucket, hset_arguments(field, value)) in rows, code


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


async def _rebuild_rows(
    connection: asyncpg.Connection, layout: Layout
) -> set[tuple[int, int, bytes]]:
    """Every row the rebuild's query gives (other tests' claims among them)."""
    mask = (1 << layout.bucket_bits) - 1
    rows = await connection.fetch(_WHOLE_CLAIMS, layout.slot_groups, mask)
    return {(group, bucket, bytes(entry)) for group, bucket, entry in rows}
