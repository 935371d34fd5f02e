"""SQLAlchemy plumbing shared by every domain: the declarative base with named constraints and
the engine / sessionmaker factories used by the API lifespan and the consumer start-up; and
the API's pool of plain asyncpg connections for the lookup on every gate call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, MetaData, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute

# Alembic and the database agree on constraint names only if every constraint is named.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def core_table(model: type[Base]) -> Table:
    """The model's table, for Core inserts: multi-row writes skip the ORM's bulk-persistence
    bookkeeping, which profiling showed costing a third of the consumer's write time."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def any_of(column: InstrumentedAttribute[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """`column = ANY($1)` with the values as one array parameter. For the consumer's batch
    lookups (thousands of ids), instead of `IN (…)`: an expanding IN renders one parameter
    per value on every call (measured ~5 % of the consumer's CPU) and is a new statement for
    PostgreSQL to plan whenever the count changes; this is one prepared statement."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def build_engine(
    database_url: str, *, pool_size: int = 10, max_overflow: int | None = None
) -> AsyncEngine:
    # No pre-ping: it is a round trip on every checkout. A connection that died with its
    # server fails its query, is discarded by the pool, and the caller answers 503 / retries.
    return create_async_engine(
        database_url, pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
    )


def build_reader(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for units of work that only read (the gate): autocommit, so a request costs
    its queries and no BEGIN/COMMIT round trips."""
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(reader, expire_on_commit=False)


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


LOOKUP_POOL_NAME = "tracegate-lookups"  # in pg_stat_activity


async def open_lookup_pool(
    dsn: str, size: int, init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None
) -> asyncpg.Pool:
    """asyncpg's own pool, for single-statement reads the gate makes (a session and its pool
    checkout cost more than the query). `min_size=0`: nothing connects until asked, so the
    API starts while PostgreSQL is down. No reset on release: these connections hold no
    state between statements (no transaction, LISTEN, temporary table or lock), and the
    reset was a round trip on every call."""
    return await asyncpg.create_pool(
        dsn, min_size=0, max_size=size, init=init, reset=_keep,
        server_settings={"application_name": LOOKUP_POOL_NAME},
    )


async def _keep(_: asyncpg.Connection) -> None:
    return None
