"""A counter in Redis that moves whenever an institution changes, so the gate can keep the
institutions it decides for in memory for minutes (a PostgreSQL round trip per call otherwise,
for the many pharmacies that call less often than a short cache lives) and still see a change
within a call: the gate reads the counter with the settlement's codes, in the same trip."""

from __future__ import annotations

from service.kit.redis_client import RedisClient

VERSION_KEY = "tg:institutions:version"


async def changed(redis: RedisClient) -> None:
    """After an institution was written (PUT, an import): every gate drops its copies."""
    await redis.incr(VERSION_KEY)
