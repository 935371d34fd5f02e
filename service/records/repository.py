"""All SQL over the record tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.records.models import InstitutionStats


async def payment_count(session: AsyncSession, institution_id: str) -> int:
    query = select(InstitutionStats.payments).where(
        InstitutionStats.institution_id == institution_id
    )
    return (await session.execute(query)).scalar_one_or_none() or 0
