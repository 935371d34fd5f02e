"""Which consumers hold which partitions, as they announce it in Redis (service/settlements/
presence.py, read by /readyz): on one Redis and on a Redis Cluster, whose keys of different
members live in different slots (and on different nodes)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from service.kit.redis_client import RedisClient
from service.settings import Settings
from service.settlements import presence
from tests.harness import redis_client


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = redis_client(settings)
    yield client
    await client.aclose()


async def test_every_announced_member_is_read_back(redis: RedisClient) -> None:
    members = {f"test-{secrets.token_hex(4)}-{n}": [n, n + 3] for n in range(3)}
    for member, partitions in members.items():
        await presence.announce(redis, member, partitions)
    try:
        assigned = await presence.assigned(redis)
        assert {m: assigned.get(m) for m in members} == members
        gone = next(iter(members))
        await presence.withdraw(redis, gone)
        assert gone not in await presence.assigned(redis)
    finally:
        for member in members:
            await presence.withdraw(redis, member)
