from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.models import ApiKey


async def find_active_key(session: AsyncSession, key_hash: bytes) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def add_key_if_absent(session: AsyncSession, key_hash: bytes, role: str) -> None:
    """Every API worker bootstraps the same admin key at once: the second insert is a no-op,
    not a unique violation that would stop that worker."""
    statement = insert(ApiKey).values(key_hash=key_hash, role=role)
    await session.execute(statement.on_conflict_do_nothing(index_elements=[ApiKey.key_hash]))


async def revoke_key(session: AsyncSession, key_id: int) -> tuple[bytes, dt.datetime] | None:
    """Revoke once: a second revocation keeps the first time. The key's digest and revocation
    time, or None for an unknown id."""
    statement = (
        update(ApiKey).where(ApiKey.id == key_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, func.now()))
        .returning(ApiKey.key_hash, ApiKey.revoked_at)
    )
    row = (await session.execute(statement)).first()
    if row is None or row.revoked_at is None:  # revoked_at is set by the statement itself
        return None
    return row.key_hash, row.revoked_at


async def page(
    session: AsyncSession, after: int | None, limit: int, include_revoked: bool
) -> list[ApiKey]:
    """Keyset pagination on the key id, oldest first."""
    query = select(ApiKey)
    if after is not None:
        query = query.where(ApiKey.id > after)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query.order_by(ApiKey.id).limit(limit))).scalars())
