from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey


async def find_active_key(session: AsyncSession, key_hash: bytes) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


async def key_hash_exists(session: AsyncSession, key_hash: bytes) -> bool:
    query = select(ApiKey.id).where(ApiKey.key_hash == key_hash)
    return (await session.execute(query)).first() is not None


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key
