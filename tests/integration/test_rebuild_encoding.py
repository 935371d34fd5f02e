"""The rebuild lets PostgreSQL encode whole-pack values (owner token, institution number, day)
for speed; the consumers and the gate encode them in Python. Both must write the same bytes,
or a rebuilt set would take every replay for a duplicate."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.decisions.core import owner_token
from service.decisions.schemas import CodeState
from service.firstseen.encoding import encode_state
from service.firstseen.rebuild import _WHOLE_CLAIMS
from service.settings import Settings

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
    expected: dict[str, bytes] = {}
    for index, (sid, line_no, number, paid_at) in enumerate(CASES):
        institution, code = f"ENC{index:09d}", f"8{index:019d}"
        await connection.execute(
            "INSERT INTO institutions (institution_id, name, kind, region, number) "
            "OVERRIDING SYSTEM VALUE VALUES ($1, 'encoding test', 'retail_pharmacy', '110000', $2)",
            institution, number)
        await connection.execute(
            "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
            "first_seen_at) VALUES ($1, $2, $3, $4, $5, $5)", code, sid, line_no, institution,
            paid_at)
        value = encode_state(CodeState(owner_token(sid, line_no), number, int(paid_at.timestamp())))
        expected[code] = struct.pack(">H", len(value)) + value
    rows = await connection.fetch(f"SELECT * FROM ({_WHOLE_CLAIMS}) q WHERE code = ANY($1)",
                                  list(expected))
    assert {code: bytes(value) for code, value in rows} == expected
