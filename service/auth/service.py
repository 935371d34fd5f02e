"""API keys: random, shown once, stored as HMAC(pepper, key), looked up by that digest.

Looking a key up by its keyed digest means the comparison happens on digests inside an index,
never on the secret; the final `digests_equal` keeps the check constant-time all the same."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth import repository
from service.auth.models import ApiKey
from service.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyListed,
    ApiKeyPage,
    ApiKeyRevoked,
    Caller,
    Role,
)
from service.kit.errors import AppError, Conflict, NotFound, Unprocessable
from service.kit.keyed_hash import digests_equal, keyed_digest
from service.kit.ttl_cache import TtlCache

KEY_PREFIX = "tg_"


class Unauthenticated(AppError):
    status_code = 401
    code = "UNAUTHENTICATED"


class Forbidden(AppError):
    status_code = 403
    code = "FORBIDDEN"


class KeyNotFound(NotFound):
    code = "KEY_NOT_FOUND"


class KeyInUse(Conflict):
    code = "KEY_IN_USE"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(pepper: str, key: str) -> bytes:
    return keyed_digest(pepper, key)


async def authenticate(
    sessions: async_sessionmaker[AsyncSession], pepper: str, key: str,
    cache: TtlCache[bytes, Caller] | None = None,
) -> Caller:
    """Known keys are cached for seconds (a revocation takes effect within the cache's TTL);
    unknown keys never are, so a key works the moment it is created. A session is opened only
    when the cache misses: not every call pays for one."""
    digest = hash_key(pepper, key)

    async def load() -> Caller:
        async with sessions() as session:
            stored = await repository.find_active_key(session, digest)
        if stored is None or not digests_equal(stored.key_hash, digest):
            raise Unauthenticated("unknown or revoked API key")
        return Caller(stored.id, Role(stored.role), stored.institution_id)

    return await cache.get_or_load(digest, load) if cache is not None else await load()


async def create_key(session: AsyncSession, pepper: str, request: ApiKeyCreate) -> ApiKeyCreated:
    if (request.role is Role.POS) != (request.institution_id is not None):
        raise Unprocessable("institution_id is required for a pos key and only for a pos key")
    key = new_key()
    row = ApiKey(
        key_hash=hash_key(pepper, key), role=request.role.value,
        institution_id=request.institution_id,
    )
    await repository.add_key(session, row)
    return ApiKeyCreated(
        key=key, key_id=row.id, role=request.role, institution_id=request.institution_id
    )


async def revoke_key(
    session: AsyncSession, caller: Caller, key_id: int,
    cache: TtlCache[bytes, Caller] | None = None,
) -> ApiKeyRevoked:
    """From now on the key is refused: at once by this process, within the key cache's TTL
    (10 s) by the other API processes. Revoking twice is harmless; revoking the key of the
    call itself is refused, so an admin cannot lock the last way in out by mistake."""
    if caller.key_id == key_id:
        raise KeyInUse("this call is made with that key; revoke it with another admin key")
    revoked = await repository.revoke_key(session, key_id)
    if revoked is None:
        raise KeyNotFound(f"no API key with id {key_id}")
    key_hash, revoked_at = revoked
    if cache is not None:
        cache.forget(key_hash)
    return ApiKeyRevoked(key_id=key_id, revoked_at=revoked_at)


async def ensure_admin_key(session: AsyncSession, pepper: str, key: str) -> None:
    """Bootstrap: make sure a known admin key exists (a new stack has no other way in)."""
    await repository.add_key_if_absent(session, hash_key(pepper, key), Role.ADMIN.value)


def require_role(caller: Caller, *roles: Role) -> None:
    if caller.role not in roles:
        raise Forbidden(f"role {caller.role.value} may not do this")


def require_institution(caller: Caller, institution_id: str) -> None:
    """pos keys act only for their own institution; admin acts for any."""
    if caller.role is Role.POS and caller.institution_id != institution_id:
        raise Forbidden(f"this key may not act for institution {institution_id}")


async def list_keys(
    session: AsyncSession, after: int | None, limit: int, include_revoked: bool
) -> ApiKeyPage:
    rows = await repository.page(session, after, limit + 1, include_revoked)
    items = [ApiKeyListed(key_id=row.id, role=Role(row.role), institution_id=row.institution_id,
                          created_at=row.created_at, revoked_at=row.revoked_at)
             for row in rows[:limit]]
    more = len(rows) > limit
    return ApiKeyPage(items=items, next_cursor=str(items[-1].key_id) if more else None)
