"""The gate's recent answers, in Redis: replays and reversals are answered from here without
PostgreSQL (the record may trail the gate by a second, and asking it on every call cost a
third of the gate's CPU).

A settlement's entry is set in the same script call that makes its claims (claim.lua): a
second call for the same settlement_id while the first is on its way finds it, and is a
replay (same body) or a conflict (another body), never a second decision. The entry counts
as given only once Kafka acknowledged the settlement: the gate confirms it then (a small key,
written for many calls at once). An entry never confirmed by its deadline belongs to a gate
that died or lost Kafka mid-call: the record is asked, and the settlement sent again if it is
not there (the same decision, so whichever copy the record meets first is kept)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from service.kit.redis_client import RedisClient
from service.kit.redis_pipe import RedisPipe

log = logging.getLogger(__name__)

TTL_S = 3600
# Long enough that calls share a write even at a few hundred a second (each write that
# wakes Redis costs ~50-75 µs of CPU on a quiet machine); a replay of a call this recent
# waits for its confirmation at most this much longer.
_CONFIRM_LINGER_S = 0.025


def settlement_key(settlement_id: str) -> str:
    return f"tg:recent:s:{settlement_id}"


def confirmed_key(settlement_id: str) -> str:
    return f"tg:recent:ok:{settlement_id}"


class RecentSettlement(msgspec.Struct, frozen=True, gc=False):
    """What a replay or a reversal needs of a settlement the gate decided lately."""

    institution_id: str
    patient_ref: str | None
    body_hash: str  # hex
    settled_at: str
    attempt: str
    confirm_by_ms: int  # Kafka must have acknowledged it by then, or the gate gave up
    lines: msgspec.Raw  # records.schemas.RecordedLine, as JSON
    answer: msgspec.Raw


class Confirmations:
    """Marks entries given: each call adds its settlement, one pipeline writes what gathered
    in a couple of milliseconds (concurrent calls share the round trip)."""

    def __init__(self, redis: RedisClient | RedisPipe, ttl_s: int = TTL_S) -> None:
        self._redis, self._ttl_s = redis, ttl_s
        self._waiting: list[str] = []
        self._flush: asyncio.Task[None] | None = None

    def add(self, settlement_id: str) -> None:
        self._waiting.append(settlement_id)
        if self._flush is None:
            self._flush = asyncio.create_task(self._write_soon())

    async def _write_soon(self) -> None:
        await asyncio.sleep(_CONFIRM_LINGER_S)
        waiting, self._waiting, self._flush = self._waiting, [], None
        try:
            await self._write(waiting)
        except Exception:  # noqa: BLE001 - an unconfirmed entry is checked against the record
            log.warning("could not confirm %d recent answers", len(waiting), exc_info=True)

    async def _write(self, settlement_ids: list[str]) -> None:
        if isinstance(self._redis, RedisPipe):
            ttl = str(self._ttl_s)
            await self._redis.execute_many(
                [("SET", confirmed_key(s), b"1", "EX", ttl) for s in settlement_ids])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for settlement_id in settlement_ids:
                pipe.set(confirmed_key(settlement_id), b"1", ex=self._ttl_s)
            await pipe.execute()

    async def aclose(self) -> None:
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await self._flush


class RecentAnswers:
    """Reversals the gate gave lately, and attempts it gave up on."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def reversal(self, reversal_id: str) -> tuple[str, list[int] | None, bytes] | None:
        raw = await self._redis.get(f"tg:recent:r:{reversal_id}")
        if raw is None:
            return None
        settlement_id, line_nos, answer = msgspec.json.decode(raw)
        return settlement_id, line_nos, msgspec.json.encode(answer)

    async def put_reversal(
        self, reversal_id: str, settlement_id: str, line_nos: list[int] | None, answer: bytes
    ) -> None:
        value = msgspec.json.encode((settlement_id, line_nos, msgspec.Raw(answer)))
        key = f"tg:recent:rs:{settlement_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"tg:recent:r:{reversal_id}", value, ex=TTL_S)
            pipe.rpush(key, msgspec.json.encode(line_nos))
            pipe.expire(key, TTL_S)
            await pipe.execute()

    async def reversed_line_sets(self, settlement_id: str) -> list[list[int] | None]:
        raw: list[Any] = await self._redis.lrange(f"tg:recent:rs:{settlement_id}", 0, -1)
        return [msgspec.json.decode(item) for item in raw]

    async def void_attempt(self, settlement_id: str, attempt: str) -> None:
        """The gate answered 503 for this attempt: if its event still reaches the topic (a
        produce that was only slow), the consumers must not record it. Its entry goes too."""
        key = f"tg:void:{settlement_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, attempt)
            pipe.expire(key, 7 * 24 * 3600)
            pipe.delete(settlement_key(settlement_id))
            await pipe.execute()

    async def voided(self, attempts: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (settlement_id, attempt) pairs the gate gave up on; one round trip."""
        if not attempts:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for settlement_id, attempt in attempts:
                pipe.sismember(f"tg:void:{settlement_id}", attempt)
            answers = await pipe.execute()
        return {pair for pair, voided in zip(attempts, answers, strict=True) if voided}
