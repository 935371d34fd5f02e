"""Raw bulk writes: many commands answered by counting replies, and an error reply raised, not
counted as a success."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from service.kit.redis_bulk import BulkWriter, PackedCommand, hset_arguments, hset_command
from service.kit.redis_client import RedisClient
from service.settings import Settings
from tests.harness import redis_client


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = redis_client(settings)  # a cluster's: the writer goes node by node
    yield client
    await client.aclose()


def _hset(key: str, fields: dict[bytes, bytes]) -> PackedCommand:
    return hset_command(key, [hset_arguments(f, v) for f, v in fields.items()])


async def test_every_command_lands_before_send_returns(redis: RedisClient) -> None:
    prefix = f"test:bulk:{secrets.token_hex(4)}"
    commands = [_hset(f"{prefix}:{n}", {b"f%d" % i: b"v\r\n%d" % i for i in range(n % 7 + 1)})
                for n in range(20_000)]
    writer = BulkWriter(redis)
    try:
        await writer.send(commands)
    finally:
        await writer.aclose()
    assert await redis.hgetall(f"{prefix}:6") == {b"f%d" % i: b"v\r\n%d" % i for i in range(7)}
    assert await redis.hlen(f"{prefix}:19999") == 19_999 % 7 + 1


async def test_an_error_reply_is_raised(redis: RedisClient) -> None:
    key = f"test:bulk:{secrets.token_hex(4)}"
    await redis.set(f"{key}:string", "not a hash")
    writer = BulkWriter(redis)
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await writer.send([_hset(f"{key}:a", {b"f": b"v"}),
                               _hset(f"{key}:string", {b"f": b"v"})])
    finally:
        await writer.aclose()
