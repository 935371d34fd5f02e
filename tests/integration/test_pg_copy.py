"""The binary COPY encoder against PostgreSQL itself: rows written through it read back as
the rows written by asyncpg's own codecs, for every column kind, every edge the record can
hold (time zones, the ends of int4, NULLs, non-ASCII, JSON); and a value PostgreSQL refuses
fails the COPY as a whole, with nothing written."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from service.kit.pg_copy import CopyTable, copy_rows
from service.records.repository import json_as_bytes
from service.settings import Settings

COLUMNS = ("t", "z", "i", "b", "y", "j", "jb")
SQL_TYPES = ("text", "timestamptz", "int4", "bool", "bytea", "json", "jsonb")
ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=8)),
         dt.timezone(dt.timedelta(hours=-3, minutes=-30)), zoneinfo.ZoneInfo("Asia/Shanghai"),
         zoneinfo.ZoneInfo("Europe/London")]


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    await json_as_bytes(connection)
    columns = ", ".join(f"{name} {kind}" for name, kind in zip(COLUMNS, SQL_TYPES, strict=True))
    for table in ("ours", "theirs"):
        await connection.execute(f"CREATE TEMPORARY TABLE {table} (n int, {columns})")
    yield connection
    await connection.close()


def _row(rng: random.Random, n: int) -> tuple[Any, ...]:
    values = (
        rng.choice(["", "H12345678901", "结算-二 ✓", "x" * 300, "a\tb\nc\\d"]),
        dt.datetime(rng.randrange(1, 9999), rng.randrange(1, 13), rng.randrange(1, 29),
                    rng.randrange(24), rng.randrange(60), rng.randrange(60),
                    rng.randrange(10**6), tzinfo=rng.choice(ZONES)),
        rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)]),
        rng.choice([True, False]),
        rng.randbytes(rng.randrange(40)),
        msgspec.json.encode({"line_no": n, "codes": ["8" * 20] * rng.randrange(4), "u": "单"}),
        msgspec.json.encode([n, {"b": rng.random(), "a": None}]),
    )
    return (n, *(None if rng.random() < 0.15 else value for value in values))


async def test_rows_copied_through_the_encoder_read_back_as_asyncpgs(
    connection: asyncpg.Connection,
) -> None:
    rng = random.Random(20261207)
    rows = [_row(rng, n) for n in range(2_000)]
    await copy_rows(connection, CopyTable("ours", ("n", *COLUMNS), "itzibyjJ"), rows)
    await connection.copy_records_to_table("theirs", records=rows, columns=["n", *COLUMNS])
    ours = await connection.fetch("SELECT * FROM ours ORDER BY n")
    theirs = await connection.fetch("SELECT * FROM theirs ORDER BY n")
    assert [tuple(r) for r in ours] == [tuple(r) for r in theirs]
    assert [tuple(r)[:7] for r in ours] == [row[:7] for row in rows]  # json: as it came


async def test_a_value_postgresql_refuses_fails_the_whole_copy(
    connection: asyncpg.Connection,
) -> None:
    rows = [(1, "ok", None, None, None, None, b'{"a": 1}', None),
            (2, "bad", None, None, None, None, b"{not json", None)]
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await copy_rows(connection, CopyTable("ours", ("n", *COLUMNS), "itzibyjJ"), rows)
    assert await connection.fetchval("SELECT count(*) FROM ours") == 0


async def test_no_rows_is_no_copy(connection: asyncpg.Connection) -> None:
    await copy_rows(connection, CopyTable("no_such_table", ("n",), "i"), [])
