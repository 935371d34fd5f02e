"""Which partitions of the settlements topic have a consumer right now: each consumer says so
in Redis (a key with a short time to live, renewed while it runs), so `/readyz` and
`tracegate dev` can tell "ready" from "the gate answers but nothing records yet"."""

from __future__ import annotations

import asyncio

import msgspec

from service.kit.redis_client import RedisClient

PREFIX = "tg:consumer:"
TTL_S = 10
RENEW_S = 2.0


async def announce(redis: RedisClient, member: str, partitions: list[int]) -> None:
    await redis.set(PREFIX + member, msgspec.json.encode(sorted(partitions)), ex=TTL_S)


async def withdraw(redis: RedisClient, member: str) -> None:
    await redis.delete(PREFIX + member)


async def assigned(redis: RedisClient) -> dict[str, list[int]]:
    """Partitions by consumer, of the consumers alive in the last TTL_S seconds."""
    keys = [key async for key in redis.scan_iter(match=PREFIX + "*", count=1000)]
    if not keys:
        return {}
    # one GET a key: on a Redis Cluster the members' keys live in different slots (no MGET)
    values = await asyncio.gather(*(redis.get(key) for key in keys))
    return {key.decode()[len(PREFIX):]: msgspec.json.decode(value, type=list[int])
            for key, value in zip(keys, values, strict=True) if value is not None}
