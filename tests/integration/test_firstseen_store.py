"""The first-seen store when one slot group refuses a change while the others take theirs (a
group being rebuilt, a Redis Cluster node away): the caller answers 503, so nothing of the
change may stay behind (CONTRACT §4: "answers 503 and keeps no claim"). On a Redis database of
its own, so that no consumer's watcher sees the missing marker and rebuilds."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from service.decisions.schemas import ClaimChange, CodeState, FirstPayment
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore, HotSetRebuilding, Seen
from service.settings import Settings
from tests import factories as f

OWN_DB = 9


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    url = urlsplit(settings.redis_url)._replace(path=f"/{OWN_DB}").geturl()
    client = Redis.from_url(url)
    assert client.connection_pool.connection_kwargs["db"] == OWN_DB
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


def _codes_in_two_groups(layout: Layout) -> tuple[str, str]:
    first = f.cn20()
    while True:
        other = f.cn20()
        if layout.address(other).group != layout.address(first).group:
            return first, other


async def test_a_change_one_group_refuses_gives_back_what_the_others_took(
    redis: Redis, settings: Settings,
) -> None:
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    store = FirstSeenStore(redis, layout)
    taken, refused = _codes_in_two_groups(layout)
    await redis.mset(dict.fromkeys(layout.generation_keys(), b"test"))
    await redis.delete(layout.generation_key(layout.address(refused).group))
    first = FirstPayment("S1", "I1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    changes = [ClaimChange(code, 1, None, CodeState(7, 1, 1_767_571_200))
               for code in (taken, refused)]

    with pytest.raises(HotSetRebuilding):
        await store.apply(changes, {taken: first, refused: first})

    await redis.set(layout.generation_key(layout.address(refused).group), b"test")
    assert await store.read([taken, refused]) == {taken: Seen(None, None),
                                                  refused: Seen(None, None)}
