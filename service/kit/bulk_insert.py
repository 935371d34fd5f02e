"""Multi-row inserts as one statement over arrays (`INSERT … SELECT FROM unnest(…)`), sent
through asyncpg on the session's own connection, so they join the caller's transaction.

The consumer writes tens of thousands of rows a second; SQLAlchemy's per-row parameter
processing for executemany cost more client CPU than PostgreSQL spent storing them. Arrays
travel in asyncpg's binary format and the statement is prepared once per shape."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]],
    returning: str | None = None,
) -> list[Any]:
    """Insert `rows` (all with the same keys), skipping conflicts; returns the `returning`
    column of the rows actually inserted."""
    if not rows:
        return []
    columns = list(rows[0])
    statement = _statement(table, tuple(columns), returning)
    arrays = [_array(table, name, rows) for name in columns]
    connection = await (await session.connection()).get_raw_connection()
    driver: Any = connection.driver_connection
    if returning is None:
        await driver.execute(statement, *arrays)
        return []
    return [record[0] for record in await driver.fetch(statement, *arrays)]


@lru_cache(maxsize=64)  # a handful of shapes, built per batch otherwise
def _statement(table: Table, columns: tuple[str, ...], returning: str | None) -> str:
    arrays = ", ".join(f"${i}::{_array_type(table, name)}" for i, name in enumerate(columns, 1))
    selected = ", ".join(_selected(table, name) for name in columns)
    tail = f" RETURNING {returning}" if returning else ""
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {selected} "
        f"FROM unnest({arrays}) AS t({', '.join(columns)}) ON CONFLICT DO NOTHING{tail}"
    )


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type, postgresql.JSONB)


def _array_type(table: Table, name: str) -> str:
    if _is_json(table, name):
        return "text[]"  # sent as text, cast per element: asyncpg has no jsonb[] encoder
    return f"{table.c[name].type.compile(dialect=_DIALECT)}[]"


def _selected(table: Table, name: str) -> str:
    return f"t.{name}::jsonb" if _is_json(table, name) else f"t.{name}"


def _array(table: Table, name: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
    if not _is_json(table, name):
        return [row[name] for row in rows]
    return [None if row[name] is None else orjson.dumps(row[name]).decode() for row in rows]
