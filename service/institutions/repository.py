from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.institutions.models import Institution
from service.institutions.schemas import InstitutionIn, InstitutionRef
from service.kit.database import any_of
from service.settings import InstitutionKind


async def get(session: AsyncSession, institution_id: str) -> Institution | None:
    query = (
        select(Institution)
        .where(Institution.institution_id == institution_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_many(session: AsyncSession, institution_ids: Iterable[str]) -> list[Institution]:
    query = select(Institution).where(any_of(Institution.institution_id, set(institution_ids)))
    return list((await session.execute(query)).scalars())


async def upsert(session: AsyncSession, institution_id: str, data: InstitutionIn) -> None:
    values = {"institution_id": institution_id, **data.model_dump(mode="python")}
    statement = insert(Institution).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[Institution.institution_id],
        set_={key: statement.excluded[key] for key in data.model_dump()},
    )
    await session.execute(statement)


async def refs(querier: asyncpg.Connection | asyncpg.Pool,
               institution_ids: Iterable[str]) -> dict[str, InstitutionRef]:
    """What deciding needs of these institutions, through asyncpg (the consumers' batch and
    the gate's call, where a session costs more than the query)."""
    rows = await querier.fetch(
        "SELECT institution_id, number, kind, go_live_override FROM institutions "
        "WHERE institution_id = ANY($1::text[])", list(institution_ids))
    return {row[0]: InstitutionRef(row[0], row[1], InstitutionKind(row[2]), row[3])
            for row in rows}


async def page(session: AsyncSession, after: str | None, limit: int) -> list[Institution]:
    """Keyset pagination on the institution id."""
    query = select(Institution)
    if after is not None:
        query = query.where(Institution.institution_id > after)
    query = query.order_by(Institution.institution_id).limit(limit)
    return list((await session.execute(query)).scalars())


async def upsert_many(session: AsyncSession, rows: Sequence[tuple[str, InstitutionIn]]) -> None:
    """One statement for many institutions (a bulk import), as `upsert` does for one."""
    if not rows:
        return
    values = [{"institution_id": institution_id, **data.model_dump(mode="python")}
              for institution_id, data in rows]
    statement = insert(Institution).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[Institution.institution_id],
        set_={key: statement.excluded[key] for key in InstitutionIn.model_fields},
    )
    await session.execute(statement)
