"""Rebuild the first-seen set from the record (`tracegate rebuild-hot-set`, or by itself when
Redis lost it).

PostgreSQL's `code_claims` holds every code that is paid now; this streams it with a
server-side cursor (PostgreSQL encodes whole-pack values itself), addresses each code, and
writes each slot group's buckets with one call of load.lua per flush. Each slot group has a
generation marker that cas.lua insists on: it is removed first and set last, so while the set
is incomplete the gate answers 503 HOT_SET_REBUILDING and the consumers wait, instead of
taking a missing claim for "unpaid". Claims the gate made that the record does not hold yet
are put back by the consumers as they record the gate's settlements."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import asyncpg

from service.decisions.core import owner_token
from service.decisions.schemas import CodeState
from service.firstseen.encoding import Layout, encode_state
from service.kit.redis_client import LuaScript, RedisClient, run_script

LOAD_SCRIPT = LuaScript(resources.files(__package__).joinpath("load.lua").read_text())
_U16 = struct.Struct(">H")

CHUNK = 50_000
FLUSH_EVERY = 1_000_000  # codes buffered before they are written (~60 MB)

# Whole packs, nearly all of the set: PostgreSQL encodes the value exactly as `encode_state`
# does (owner token = CRC-32 of "settlement_id:line_no", institution number as u32, days since
# 2020-01-01 as u16) and frames it for load.lua (its length, 10, as u16), so Python only
# addresses each code. tests/integration/test_rebuild_encoding.py holds the two equal.
_WHOLE_CLAIMS = """
SELECT c.code,
       '\\x000a'::bytea
       || int4send(crc32(convert_to(c.settlement_id || ':' || c.line_no, 'UTF8'))::bit(32)::int4)
       || int4send(i.number::bit(32)::int4)
       || substr(int4send(greatest(0, least(65535,
              (c.paid_at AT TIME ZONE 'UTC')::date - date '2020-01-01'))), 3, 2)
FROM code_claims c JOIN institutions i USING (institution_id)
WHERE c.units_used IS NULL
"""
_SPLIT_CLAIMS = """
SELECT c.code, c.settlement_id, c.line_no, i.number, floor(extract(epoch FROM c.paid_at))::bigint,
       c.units_used, c.pack_size
FROM code_claims c JOIN institutions i USING (institution_id)
WHERE c.units_used IS NOT NULL
"""
# The lines that sold units from each open split pack, minus those reversed since, in a
# stable order (so two rebuilds write the same bytes).
_SPLIT_SELLERS = """
SELECT e.code, e.settlement_id, e.line_no FROM code_events e
WHERE e.code = ANY($1::text[]) AND e.type = 'payment' AND e.units IS NOT NULL
  AND NOT e.duplicate
  AND NOT EXISTS (SELECT 1 FROM code_events r WHERE r.code = e.code AND r.type = 'reversal'
                  AND r.settlement_id = e.settlement_id AND r.line_no = e.line_no)
ORDER BY e.event_at, e.recorded_at, e.settlement_id, e.line_no
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
    """Drop the set and its pending details (the record is the truth being reloaded), 1,000
    keys per UNLINK. Not in a pipeline: a cluster pipeline's `unlink` is a coroutine that
    never joins the pipeline, so the keys stayed."""
    removed = 0
    for pattern in ("tg:fs{*", "tg:pd{*"):
        keys: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            keys.append(key)
            if len(keys) == CLEAR_EVERY:
                removed, keys = removed + await redis.unlink(*keys), []
        if keys:
            removed += await redis.unlink(*keys)
    return removed


CLEAR_EVERY = 1000


async def rebuild(
    dsn: str, redis: RedisClient, layout: Layout, progress: Callable[[int], None] | None = None
) -> int:
    """Stream the claims and write them; PostgreSQL computes the next chunk and Redis stores
    the last one while this process addresses the current one."""
    writer = _Writer(redis, layout)
    connection = await asyncpg.connect(dsn)
    try:
        async for chunk in _chunks(connection, _WHOLE_CLAIMS):
            await writer.add(chunk)
            _report(progress, len(chunk))
        async for chunk in _chunks(connection, _SPLIT_CLAIMS):
            await writer.add(await _split_values(connection, chunk))
            _report(progress, len(chunk))
        return await writer.finish()
    finally:
        await connection.close()


def _report(progress: Callable[[int], None] | None, count: int) -> None:
    if progress is not None:
        progress(count)


async def _chunks(connection: Any, query: str) -> AsyncIterator[list[Any]]:
    """Rows in chunks, the next one already asked for while the caller works on this one."""
    async with connection.transaction():
        cursor = await connection.cursor(query)
        ahead = asyncio.ensure_future(cursor.fetch(CHUNK))
        try:
            while chunk := await ahead:
                ahead = asyncio.ensure_future(cursor.fetch(CHUNK))
                await asyncio.sleep(0)  # let the request go out before the caller's CPU work
                yield chunk
        finally:
            ahead.cancel()


async def _split_values(connection: Any, rows: list[Any]) -> list[tuple[str, bytes]]:
    """Split packs (few): their value lists every line that sold units, from code_events."""
    sellers = await _sellers(connection, [row[0] for row in rows])
    values: list[tuple[str, bytes]] = []
    for code, sid, line_no, number, paid_at, used, pack_size in rows:
        token = owner_token(sid, line_no)
        owners = tuple(sellers.get(code, (token,)))
        state = CodeState(token, number, paid_at, used, pack_size, owners)
        value = encode_state(state)
        values.append((code, _U16.pack(len(value)) + value))
    return values


async def _sellers(connection: Any, codes: list[str]) -> dict[str, list[int]]:
    sellers: dict[str, list[int]] = defaultdict(list)
    for code, sid, line_no in await connection.fetch(_SPLIT_SELLERS, codes):
        sellers[code].append(owner_token(sid, line_no))
    return sellers


class _Writer:
    """Buffers `field + framed value` by slot group and bucket and, every FLUSH_EVERY codes,
    writes each group with one script call (one hash tag): every bucket then gets several
    fields per HSET whatever the layout's size, and memory stays bounded whatever the set's.
    One write is in flight while the next chunks are addressed. A call holds Redis for as
    long as its group's share of a flush takes (~0.1 s with 16 groups): nothing else may
    use the set during a rebuild anyway."""

    def __init__(self, redis: RedisClient, layout: Layout) -> None:
        self._redis, self._layout = redis, layout
        self._buckets = self._empty()
        self._buffered = self.written = 0
        self._in_flight: asyncio.Future[Any] | None = None

    def _empty(self) -> list[defaultdict[int, list[bytes]]]:
        return [defaultdict(list) for _ in range(self._layout.slot_groups)]

    async def add(self, rows: list[tuple[str, bytes]]) -> None:
        self._layout.gather(rows, self._buckets)
        self._buffered += len(rows)
        if self._buffered >= FLUSH_EVERY:
            await self._flush()

    async def finish(self) -> int:
        await self._flush()
        if self._in_flight is not None:
            await self._in_flight
        return self.written

    async def _flush(self) -> None:
        calls = [self._call(group, buckets) for group, buckets in enumerate(self._buckets)]
        self.written += self._buffered
        self._buckets, self._buffered = self._empty(), 0
        if self._in_flight is not None:
            await self._in_flight
        self._in_flight = asyncio.ensure_future(self._send([c for c in calls if c[0]]))
        await asyncio.sleep(0)  # let it go out

    def _call(self, group: int, buckets: dict[int, list[bytes]]) -> tuple[list[str], list[bytes]]:
        keys = [self._layout.bucket_key(group, bucket) for bucket in buckets]
        return keys, [b"".join(fields) for fields in buckets.values()]

    async def _send(self, calls: list[tuple[list[str], list[bytes]]]) -> None:
        await run_script(self._redis, LOAD_SCRIPT, calls)
