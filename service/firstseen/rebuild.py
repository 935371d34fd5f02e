"""Rebuild the first-seen set from the record (`tracegate rebuild-hot-set`, or by itself when
Redis lost it).

PostgreSQL's `code_claims` holds every code that is paid now; this streams it with a
server-side cursor and writes the compact Redis layout in pipelined multi-field HSETs, one
round trip per chunk. Each slot group has a generation marker that the Lua script insists
on: it is removed first and set last, so while the set is incomplete the gate answers 503
HOT_SET_REBUILDING and the consumers wait, instead of taking a missing claim for "unpaid".
Claims the gate made that the record does not hold yet are put back by the consumers as they
record the gate's settlements."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from service.decisions.core import owner_token
from service.decisions.schemas import CodeState
from service.firstseen.encoding import Layout, encode_state
from service.kit.redis_client import RedisClient

CHUNK = 20_000

_CLAIMS = """
SELECT c.code, c.settlement_id, c.line_no, i.number, extract(epoch FROM c.paid_at)::bigint,
       c.units_used, c.pack_size
FROM code_claims c JOIN institutions i USING (institution_id)
"""
# The lines that sold units from each open split pack, minus those reversed since.
_SPLIT_SELLERS = """
SELECT e.code, e.settlement_id, e.line_no FROM code_events e
WHERE e.code = ANY($1::text[]) AND e.type = 'payment' AND e.units IS NOT NULL
  AND NOT e.duplicate
  AND NOT EXISTS (SELECT 1 FROM code_events r WHERE r.code = e.code AND r.type = 'reversal'
                  AND r.settlement_id = e.settlement_id AND r.line_no = e.line_no)
"""


LOCK_KEY = "tg:rebuild-lock"
LOCK_TTL_S = 6  # renewed every 2 s while a rebuild runs


async def complete(redis: RedisClient, layout: Layout) -> bool:
    """Every group's marker is there: the set is whole."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in layout.generation_keys():
            pipe.exists(key)
        return all(await pipe.execute())


async def ensure(dsn: str, redis: RedisClient, layout: Layout) -> bool:
    """Rebuild if a marker is missing and nobody else is rebuilding; True if this did."""
    if await complete(redis, layout):
        return False
    return await rebuild_exclusively(dsn, redis, layout)


async def rebuild_exclusively(
    dsn: str, redis: RedisClient, layout: Layout, progress: Callable[[int], None] | None = None
) -> bool:
    """The lock lives LOCK_TTL_S and is renewed while the rebuild runs, so a rebuilder that
    dies leaves the job to another within seconds, not hours."""
    token = uuid.uuid4().hex
    if not await redis.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
        return False
    renewal = asyncio.create_task(_renew(redis, token))
    try:
        await redis.delete(*layout.generation_keys())
        await clear(redis)
        await rebuild(dsn, redis, layout, progress)
        await _mark_complete(redis, layout, token)
    finally:
        renewal.cancel()
        if await redis.get(LOCK_KEY) == token.encode():
            await redis.delete(LOCK_KEY)
    return True


async def _renew(redis: RedisClient, token: str) -> None:
    while True:
        await asyncio.sleep(LOCK_TTL_S / 3)
        if await redis.get(LOCK_KEY) != token.encode():
            return
        await redis.expire(LOCK_KEY, LOCK_TTL_S)


REBUILT_AT_KEY = "tg:rebuilt-at"


async def rebuilt_at_ms(redis: RedisClient) -> int:
    """When the set was last rebuilt (epoch ms; 0 if never): gate claims older than that may
    be missing from it, newer ones cannot."""
    raw = await redis.get(REBUILT_AT_KEY)
    return int(raw) if raw else 0


async def _mark_complete(redis: RedisClient, layout: Layout, generation: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(REBUILT_AT_KEY, int(time.time() * 1000))
        for key in layout.generation_keys():
            pipe.set(key, generation)
        await pipe.execute()


async def clear(redis: RedisClient) -> int:
    """Drop the set and its pending details (the record is the truth being reloaded)."""
    async with redis.pipeline(transaction=False) as pipe:  # one round trip, not one per key
        for pattern in ("tg:fs{*", "tg:pd{*"):
            async for key in redis.scan_iter(match=pattern, count=1000):
                pipe.unlink(key)
        return sum(await pipe.execute())


async def rebuild(
    dsn: str, redis: RedisClient, layout: Layout, progress: Callable[[int], None] | None = None
) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        total = 0
        async for chunk in _chunks(connection):
            states = await _states(connection, chunk)
            await _write(redis, layout, states)
            total += len(states)
            if progress is not None:
                progress(len(states))
        return total
    finally:
        await connection.close()


async def _chunks(connection: Any) -> AsyncIterator[list[Any]]:
    async with connection.transaction():
        cursor = await connection.cursor(_CLAIMS)
        while chunk := await cursor.fetch(CHUNK):
            yield chunk


async def _states(connection: Any, rows: list[Any]) -> dict[str, CodeState]:
    states: dict[str, CodeState] = {}
    split_codes = [row[0] for row in rows if row[5] is not None]
    sellers = await _sellers(connection, split_codes) if split_codes else {}
    for code, sid, line_no, number, paid_at, used, pack_size in rows:
        token = owner_token(sid, line_no)
        owners = tuple(sellers.get(code, (token,)))
        states[code] = CodeState(token, number, paid_at, used, pack_size,
                                 owners if used is not None else ())
    return states


async def _sellers(connection: Any, codes: list[str]) -> dict[str, list[int]]:
    sellers: dict[str, list[int]] = defaultdict(list)
    for code, sid, line_no in await connection.fetch(_SPLIT_SELLERS, codes):
        sellers[code].append(owner_token(sid, line_no))
    return sellers


async def _write(redis: RedisClient, layout: Layout, states: dict[str, CodeState]) -> None:
    buckets: dict[str, dict[bytes, bytes]] = defaultdict(dict)
    for code, state in states.items():
        address = layout.address_once(code)
        buckets[address.bucket_key][address.field] = encode_state(state)
    async with redis.pipeline(transaction=False) as pipe:
        for key, mapping in buckets.items():
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        await pipe.execute()
