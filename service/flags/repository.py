"""All SQL over the flags table."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.flags.models import Flag


async def count_by_kind(session: AsyncSession, institution_id: str) -> dict[str, int]:
    query = (
        select(Flag.kind, func.count())
        .where(Flag.institution_id == institution_id)
        .group_by(Flag.kind)
    )
    return {kind: count for kind, count in (await session.execute(query)).tuples()}
