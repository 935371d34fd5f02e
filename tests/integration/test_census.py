"""The size of the first-seen set (tracegate_hot_set_codes), counted inside Redis: exact for a
layout up to MAX_BUCKETS buckets, estimated from runs of buckets beyond. On a database of its
own, so the session's set is neither counted nor touched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.firstseen.census import count_codes
from service.firstseen.encoding import Layout
from service.settings import Settings
from tests import factories as f


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/15")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _fill(redis: Redis, layout: Layout, codes: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(codes):
            group, bucket, field = layout.locate(f.cn20())
            pipe.hset(layout.bucket_key(group, bucket), field, b"\0" * 10)
        await pipe.execute()


async def test_a_default_sized_layout_is_counted_exactly(redis: Redis) -> None:
    layout = Layout(13, 16)  # the default: 131,072 buckets
    assert await count_codes(redis, layout) == 0
    await _fill(redis, layout, 5000)
    assert await count_codes(redis, layout) == 5000
    await redis.set("tg:gen{0}:v3:16x13", b"1")  # other keys of the set are not codes
    assert await count_codes(redis, layout) == 5000


async def test_a_larger_layout_is_estimated_from_a_sample(redis: Redis) -> None:
    layout = Layout(6, 64)  # 64 groups of 64 buckets; ~8 codes a bucket
    codes = 64 * 64 * 8
    await _fill(redis, layout, codes)
    # 16 groups at random of 64: codes spread by their hash, so within 1 % (one sigma) of it
    estimate = await count_codes(redis, layout, max_buckets=1024)
    assert abs(estimate - codes) < 0.1 * codes
