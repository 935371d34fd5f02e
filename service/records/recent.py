"""The gate's own recent answers, in Redis for an hour: the record may trail the gate by up to
a second, and a replay or a reversal arriving in that second must still be answered right."""

from __future__ import annotations

from typing import Any

import orjson

from service.kit.redis_client import RedisClient

TTL_S = 3600


class RecentAnswers:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def settlement(self, settlement_id: str) -> dict[str, Any] | None:
        return await self._get(f"tg:recent:s:{settlement_id}")

    async def put_settlement(self, settlement_id: str, data: dict[str, Any]) -> None:
        await self._redis.set(f"tg:recent:s:{settlement_id}", orjson.dumps(data), ex=TTL_S)

    async def reversal(self, reversal_id: str) -> dict[str, Any] | None:
        return await self._get(f"tg:recent:r:{reversal_id}")

    async def put_reversal(self, reversal_id: str, data: dict[str, Any]) -> None:
        await self._redis.set(f"tg:recent:r:{reversal_id}", orjson.dumps(data), ex=TTL_S)
        key = f"tg:recent:rs:{data['settlement_id']}"
        await self._redis.rpush(key, orjson.dumps(data["line_nos"]))
        await self._redis.expire(key, TTL_S)

    async def reversed_line_sets(self, settlement_id: str) -> list[list[int] | None]:
        raw = await self._redis.lrange(f"tg:recent:rs:{settlement_id}", 0, -1)
        return [orjson.loads(item) for item in raw]

    async def _get(self, key: str) -> dict[str, Any] | None:
        raw = await self._redis.get(key)
        return None if raw is None else dict(orjson.loads(raw))

    async def void_attempt(self, settlement_id: str, attempt: str) -> None:
        """The gate answered 503 for this attempt: if its event still reaches the topic (a
        produce that was only slow), the consumers must not record it."""
        key = f"tg:void:{settlement_id}"
        await self._redis.sadd(key, attempt)
        await self._redis.expire(key, 7 * 24 * 3600)

    async def voided(self, attempts: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (settlement_id, attempt) pairs the gate gave up on; one round trip."""
        if not attempts:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for settlement_id, attempt in attempts:
                pipe.sismember(f"tg:void:{settlement_id}", attempt)
            answers = await pipe.execute()
        return {pair for pair, voided in zip(attempts, answers, strict=True) if voided}
