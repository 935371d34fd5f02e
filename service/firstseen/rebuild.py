"""Rebuild the first-seen set from the record (`tracegate rebuild-hot-set`, or by itself when
Redis lost it).

PostgreSQL's `code_claims` holds every code that is paid now; this streams it with a
server-side cursor (PostgreSQL addresses each code and encodes whole-pack values itself),
files each under its bucket, and writes each bucket's share of a flush with one HSET, packed
here and sent raw (service/kit/redis_bulk.py). Each slot group has a generation marker that
the scripts insist on: it is removed first and set last, so while the set is incomplete the
gate answers 503 HOT_SET_REBUILDING and the consumers wait, instead of taking a missing claim
for "unpaid". Consumers change Redis only after their commit, and wait while the markers are
down, so whatever they committed is in the record this reads, or reaches Redis after the
rebuild. Claims the gate made that the record does not hold yet are put back by the
consumers as they record the gate's settlements."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen.encoding import Layout, encode_state
from service.kit.redis_bulk import BulkWriter, hset_arguments, hset_command
from service.kit.redis_client import RedisClient

CHUNK = 50_000
# Codes buffered before they are written (~60 MB). Smaller flushes cost more commands (fewer
# fields in each HSET); larger ones leave Redis loading the last flush alone at the end.
FLUSH_EVERY = 1_000_000

# Whole packs, nearly all of the set: PostgreSQL addresses each code and encodes its value
# exactly as `Layout.locate` and `encode_state` do, so Python only files each row under its
# bucket. Address: SHA-256 of the code; group = its first 4 bytes (31 bits) mod $1, bucket =
# the next 4 bytes masked by $2, field = the 6 after. Value: owner token = CRC-32 of
# "settlement_id:line_no", institution number as u32, days since 2020-01-01 as u16. Field and
# value come as HSET arguments in RESP (`$6\r\n` field `\r\n$10\r\n` value `\r\n`). OFFSET 0
# keeps the digest computed once per row, not once per use.
# tests/integration/test_rebuild_encoding.py holds SQL and Python equal.
_WHOLE_CLAIMS = """
SELECT (substr(h, 1, 4)::int4 & 2147483647) % $1, substr(h, 5, 4)::int4 & $2,
       '\\x24360d0a'::bytea || substr(h, 9, 6) || '\\x0d0a2431300d0a'::bytea || v
       || '\\x0d0a'::bytea
FROM (SELECT sha256(convert_to(c.code, 'UTF8')) AS h,
             int4send(crc32(convert_to(c.settlement_id || ':' || c.line_no, 'UTF8'))
                      ::bit(32)::int4)
             || int4send(i.number::bit(32)::int4)
             || substr(int4send(greatest(0, least(65535,
                    (c.paid_at AT TIME ZONE 'UTC')::date - date '2020-01-01'))), 3, 2) AS v
      FROM code_claims c JOIN institutions i USING (institution_id)
      WHERE c.units_used IS NULL OFFSET 0) AS claims
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
        loaded = await rebuild(dsn, redis, layout, progress)
        await _mark_complete(redis, layout, token, loaded)
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


async def _mark_complete(
    redis: RedisClient, layout: Layout, generation: str, loaded: int
) -> None:
    """The markers back, and when: what a rebuild may have lost (the gate's recent answers
    among it) is older than this. A set rebuilt from an empty record lost nothing (a new
    stack): it records no time, so the gate need not ask the record about every settlement
    for its first minutes."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(REBUILT_AT_KEY, int(time.time() * 1000) if loaded else 0)
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
        mask = (1 << layout.bucket_bits) - 1
        async for chunk in _chunks(connection, _WHOLE_CLAIMS, layout.slot_groups, mask):
            await writer.add(chunk)
            _report(progress, len(chunk))
        async for chunk in _chunks(connection, _SPLIT_CLAIMS):
            await writer.add(await _split_values(connection, layout, chunk))
            _report(progress, len(chunk))
        return await writer.finish()
    finally:
        await writer.aclose()
        await connection.close()


def _report(progress: Callable[[int], None] | None, count: int) -> None:
    if progress is not None:
        progress(count)


async def _chunks(connection: Any, query: str, *args: Any) -> AsyncIterator[list[Any]]:
    """Rows in chunks, the next one already asked for while the caller works on this one."""
    async with connection.transaction():
        cursor = await connection.cursor(query, *args)
        ahead = asyncio.ensure_future(cursor.fetch(CHUNK))
        try:
            while chunk := await ahead:
                ahead = asyncio.ensure_future(cursor.fetch(CHUNK))
                await asyncio.sleep(0)  # let the request go out before the caller's CPU work
                yield chunk
        finally:
            ahead.cancel()


async def _split_values(
    connection: Any, layout: Layout, rows: list[Any]
) -> list[tuple[int, int, bytes]]:
    """Split packs (few): their value lists every line that sold units, from code_events."""
    sellers = await _sellers(connection, [row[0] for row in rows])
    entries: list[tuple[int, int, bytes]] = []
    for code, sid, line_no, number, paid_at, used, pack_size in rows:
        token = owner_token(sid, line_no)
        owners = tuple(sellers.get(code, (token,)))
        value = encode_state(CodeState(token, number, paid_at, used, pack_size, owners))
        group, bucket, field = layout.locate(code)
        entries.append((group, bucket, hset_arguments(field, value)))
    return entries


async def _sellers(connection: Any, codes: list[str]) -> dict[str, list[int]]:
    sellers: dict[str, list[int]] = defaultdict(list)
    for code, sid, line_no in await connection.fetch(_SPLIT_SELLERS, codes):
        sellers[code].append(owner_token(sid, line_no))
    return sellers


class _Writer:
    """Buffers each bucket's HSET arguments and, every FLUSH_EVERY codes, writes one HSET per
    bucket: memory stays bounded whatever the set's size. One flush is in flight while the
    next chunks are filed."""

    def __init__(self, redis: RedisClient, layout: Layout) -> None:
        self._layout, self._bulk = layout, BulkWriter(redis)
        self._buckets = self._empty()
        self._buffered = self.written = 0
        self._in_flight: asyncio.Future[Any] | None = None

    def _empty(self) -> list[defaultdict[int, list[bytes]]]:
        return [defaultdict(list) for _ in range(self._layout.slot_groups)]

    async def add(self, rows: list[tuple[int, int, bytes]]) -> None:
        """`rows` are (group, bucket, `hset_arguments(field, value)`)."""
        buckets = self._buckets
        for group, bucket, arguments in rows:
            buckets[group][bucket].append(arguments)
        self._buffered += len(rows)
        if self._buffered >= FLUSH_EVERY:
            await self._flush()

    async def finish(self) -> int:
        await self._flush()
        if self._in_flight is not None:
            await self._in_flight
        return self.written

    async def aclose(self) -> None:
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
        await self._bulk.aclose()

    async def _flush(self) -> None:
        commands = [
            hset_command(self._layout.bucket_key(group, bucket), arguments)
            for group, buckets in enumerate(self._buckets)
            for bucket, arguments in buckets.items()
        ]
        self.written += self._buffered
        self._buckets, self._buffered = self._empty(), 0
        if self._in_flight is not None:
            await self._in_flight
        self._in_flight = asyncio.ensure_future(self._bulk.send(commands))
        await asyncio.sleep(0)  # let it go out

