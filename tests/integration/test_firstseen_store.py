"""The first-seen store when one slot group refuses a change while the others take theirs (a
group being rebuilt, a Redis Cluster node away): the caller answers 503, so nothing of the
change may stay behind (CONTRACT §4: "answers 503 and keeps no claim"). On a Redis database of
its own, so that no consumer's watcher sees the missing marker and rebuilds; on a Redis Cluster
(which has database 0 only) in a layout of its own, whose markers no consumer watches."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from service.decisions.schemas import ClaimChange, CodeState, FirstPayment
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore, HotSetRebuilding, Seen
from service.kit.redis_client import RedisClient
from service.settings import Settings
from tests import factories as f
from tests.harness import redis_client

OWN_DB = 9


@pytest.fixture
def layout(settings: Settings) -> Layout:
    if not settings.redis_cluster:
        return Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    return Layout(settings.hotset_bucket_bits - 1, settings.hotset_slot_groups)


@pytest.fixture
async def redis(settings: Settings, layout: Layout) -> AsyncIterator[RedisClient]:
    if settings.redis_cluster:
        client: RedisClient = redis_client(settings)
        yield client
        await client.delete(*layout.generation_keys())
        await client.aclose()
        return
    url = urlsplit(settings.redis_url)._replace(path=f"/{OWN_DB}").geturl()
    single = Redis.from_url(url)
    assert single.connection_pool.connection_kwargs["db"] == OWN_DB
    await single.flushdb()
    yield single
    await single.flushdb()
    await single.aclose()


def _codes_in_two_groups(layout: Layout) -> tuple[str, str]:
    first = f.cn20()
    while True:
        other = f.cn20()
        if layout.address(other).group != layout.address(first).group:
            return first, other


async def test_a_change_one_group_refuses_gives_back_what_the_others_took(
    redis: RedisClient, layout: Layout,
) -> None:
    store = FirstSeenStore(redis, layout)
    taken, refused = _codes_in_two_groups(layout)
    for key in layout.generation_keys():  # one slot each: no MSET across a cluster's slots
        await redis.set(key, b"test")
    await redis.delete(layout.generation_key(layout.address(refused).group))
    first = FirstPayment("S1", "I1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    changes = [ClaimChange(code, 1, None, CodeState(7, 1, 1_767_571_200))
               for code in (taken, refused)]

    with pytest.raises(HotSetRebuilding):
        await store.apply(changes, {taken: first, refused: first})

    await redis.set(layout.generation_key(layout.address(refused).group), b"test")
    assert await store.read([taken, refused]) == {taken: Seen(None, None),
                                                  refused: Seen(None, None)}
