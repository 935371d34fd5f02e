"""Redis client construction: a single server or a Redis Cluster, chosen by configuration."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient = Redis | RedisCluster


def build_redis(url: str, *, cluster: bool = False) -> RedisClient:
    if cluster:
        return RedisCluster.from_url(url)
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


async def redis_reachable(client: RedisClient, timeout_s: float = 1.0) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout_s))
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
