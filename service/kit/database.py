"""SQLAlchemy plumbing shared by every domain: the declarative base with named constraints and
the engine / sessionmaker factories used by the API lifespan and the consumer start-up."""

from __future__ import annotations

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

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


def build_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        database_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
