"""All SQL over the drug catalogue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.drugs.models import Drug
from service.drugs.schemas import CatalogueRow, DrugIn
from service.kit.database import any_of


async def get(session: AsyncSession, med_list_codg: str) -> Drug | None:
    query = select(Drug).where(Drug.med_list_codg == med_list_codg).execution_options(
        populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def upsert(session: AsyncSession, med_list_codg: str, data: DrugIn) -> None:
    statement = insert(Drug).values(med_list_codg=med_list_codg, **data.model_dump())
    statement = statement.on_conflict_do_update(
        index_elements=[Drug.med_list_codg],
        set_={"name": statement.excluded.name, "pack_size": statement.excluded.pack_size,
              "updated_at": func.now()},
    )
    await session.execute(statement)


async def pack_sizes(session: AsyncSession, codes: Iterable[str]) -> dict[str, int]:
    query = select(Drug.med_list_codg, Drug.pack_size).where(any_of(Drug.med_list_codg, codes))
    return {code: size for code, size in (await session.execute(query)).all()}


async def all_pack_sizes(session: AsyncSession) -> dict[str, int]:
    """The whole catalogue (tens of thousands of rows: a few hundred kilobytes in memory)."""
    query = select(Drug.med_list_codg, Drug.pack_size)
    return {code: size for code, size in (await session.execute(query)).all()}


# A bulk import: rows are COPYed into a temporary table, then merged in one statement. A row
# that changes nothing is not rewritten, so importing the same file again touches no row.
_STAGE = (
    "CREATE TEMPORARY TABLE drugs_import (med_list_codg text, name text, pack_size integer) "
    "ON COMMIT DROP"
)
_MERGE = (
    "INSERT INTO drugs (med_list_codg, name, pack_size) "
    "SELECT med_list_codg, name, pack_size FROM drugs_import "
    "ON CONFLICT (med_list_codg) DO UPDATE "
    "SET name = excluded.name, pack_size = excluded.pack_size, updated_at = now() "
    "WHERE (drugs.name, drugs.pack_size) IS DISTINCT FROM (excluded.name, excluded.pack_size)"
)


async def stage_import(connection: asyncpg.Connection) -> None:
    """Inside the caller's transaction: the staging table goes with its commit."""
    await connection.execute(_STAGE)


async def copy_rows(connection: asyncpg.Connection, rows: Sequence[CatalogueRow]) -> None:
    await connection.copy_records_to_table(
        "drugs_import", records=[(r.med_list_codg, r.name, r.pack_size) for r in rows],
        columns=["med_list_codg", "name", "pack_size"],
    )


async def merge_import(connection: asyncpg.Connection) -> int:
    """Returns how many rows were inserted or changed."""
    status: str = await connection.execute(_MERGE)
    return int(status.rsplit(" ", 1)[-1])
