"""The first-seen store against the real Redis: what its three scripts do (read, the gate's
all-or-nothing claim, a consumer's idempotent effects), and that the Lua that applies
effects in Redis and the Python that predicts them in a consumer's batch agree. On a Redis
database of its own, so that no consumer's watcher sees a missing marker and rebuilds; on a
Redis Cluster (which has database 0 only) in a layout of its own, whose markers no consumer
watches."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from service.claims.schemas import ClaimChange, ClaimEffect, CodeState, Effect, FirstPayment
from service.claims.service import apply_effect
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore, HotSetRebuilding, Seen
from service.kit.redis_client import RedisClient
from service.settings import Settings
from tests import factories as f
from tests.harness import redis_client

OWN_DB = 9
DAY = 1_767_571_200  # a whole day: states keep the day paid, not the instant


@pytest.fixture
def layout(settings: Settings) -> Layout:
    if not settings.redis_cluster:
        return Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    return Layout(settings.hotset_bucket_bits - 1, settings.hotset_slot_groups)


@pytest.fixture
async def redis(settings: Settings, layout: Layout) -> AsyncIterator[RedisClient]:
    if settings.redis_cluster:
        client = redis_client(settings)
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


@pytest.fixture
async def store(redis: RedisClient, layout: Layout) -> FirstSeenStore:
    for key in layout.generation_keys():  # one slot each: no MSET across a cluster's slots
        await redis.set(key, b"test")
    return FirstSeenStore(redis, layout)


def _codes_in_two_groups(layout: Layout) -> tuple[str, str]:
    first = f.cn20()
    while True:
        other = f.cn20()
        if layout.address(other).group != layout.address(first).group:
            return first, other


async def test_a_claim_one_group_refuses_leaves_nothing_behind(
    redis: RedisClient, store: FirstSeenStore,
) -> None:
    """A group being rebuilt (or a cluster node away): the gate answers 503, so nothing of
    the settlement may stay claimed (CONTRACT §4: "answers 503 and keeps no claim")."""
    layout = store.layout
    taken, refused = _codes_in_two_groups(layout)
    await redis.delete(layout.generation_key(layout.address(refused).group))
    first = FirstPayment("S1", "I1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    changes = [ClaimChange(code, 1, 7, None, CodeState(7, 1, DAY)) for code in (taken, refused)]

    with pytest.raises(HotSetRebuilding):
        await store.claim(changes, {taken: first, refused: first})

    await redis.set(layout.generation_key(layout.address(refused).group), b"test")
    assert await store.read([taken, refused]) == {taken: Seen(None, None),
                                                  refused: Seen(None, None)}


async def test_a_claim_lands_whole_or_not_at_all_and_keeps_the_first_payment(
    store: FirstSeenStore,
) -> None:
    a, b = f.cn20(), f.cn20()
    first = FirstPayment("S1", "I1", dt.datetime.fromtimestamp(DAY, dt.UTC))
    new = CodeState(7, 1, DAY)
    landed = await store.claim([ClaimChange(a, 1, 7, None, new)], {a: first})
    assert landed.landed
    stale = [ClaimChange(b, 1, 8, None, new), ClaimChange(a, 2, 8, None, new)]
    outcome = await store.claim(stale, {})
    assert outcome.failed == frozenset({1})  # a is held now
    assert await store.read([a, b]) == {a: Seen(new, first), b: Seen(None, None)}
    assert await store.read_paid([b, a, b]) == {a: Seen(new, first)}  # the paid ones only


async def test_a_claim_with_a_recent_answer_is_refused_when_one_exists(
    store: FirstSeenStore,
) -> None:
    """The settlement's recent answer is set with its claims; a second call for the same
    settlement_id finds it and changes nothing."""
    a = f.cn20()
    key = f"tg:recent:s:{f.settlement_id()}"
    change = ClaimChange(a, 1, 7, None, CodeState(7, 1, DAY))
    assert (await store.claim([change], {}, (key, b"first", 60))).landed
    again = await store.claim([ClaimChange(f.cn20(), 1, 7, None, CodeState(7, 1, DAY))], {},
                              (key, b"second", 60))
    assert again.prior == b"first"
    read = await store.read_for_gate([a], [key, "tg:absent"])
    assert read.values == [b"first", None]


async def test_a_refused_claim_leaves_no_recent_answer(store: FirstSeenStore) -> None:
    """A code that moved on refuses the claim, and the answer set with it must not stay: the
    gate decides again, and would otherwise find its own abandoned answer and replay it."""
    a, b = f.cn20(), f.cn20()
    held = CodeState(7, 1, DAY)
    assert (await store.claim([ClaimChange(a, 1, 7, None, held)], {})).landed
    key = f"tg:recent:s:{f.settlement_id()}"
    stale = [ClaimChange(b, 1, 8, None, held), ClaimChange(a, 2, 8, None, held)]
    outcome = await store.claim(stale, {}, (key, b"never given", 60))
    assert outcome.failed == frozenset({1})
    assert (await store.read_for_gate([], [key])).values == [None]
    assert (await store.read([b]))[b] == Seen(None, None)


async def test_a_guarded_claim_lands_only_while_its_keys_hold_what_they_held(
    redis: Redis, store: FirstSeenStore,
) -> None:
    code, new = f.cn20(), CodeState(7, 1, DAY)
    await redis.set("test:guard:version", b"3")
    guards = [("test:guard:version", b"3"), ("test:guard:absent", None)]
    moved = [("test:guard:version", b"2"), ("test:guard:absent", None)]
    key = f"tg:recent:s:{f.settlement_id()}"
    if not store.takes_guards:  # a Redis Cluster: the guards' keys live in other slots
        with pytest.raises(ValueError, match="no guards"):
            await store.claim([ClaimChange(code, 1, 7, None, new)], {}, guards=guards)
        return

    refused = await store.claim([ClaimChange(code, 1, 7, None, new)], {}, (key, b"a", 60),
                                guards=moved)
    assert refused.guarded
    assert not refused.landed
    assert await store.read([code]) == {code: Seen(None, None)}
    assert await redis.get(key) is None
    assert (await store.claim([ClaimChange(code, 1, 7, None, new)], {}, (key, b"a", 60),
                              guards=guards)).landed
    assert await store.read([code]) == {code: Seen(new, None)}


async def test_effects_in_redis_are_what_the_batch_predicts(store: FirstSeenStore) -> None:
    """apply.lua and claims.service.apply_effect on the same random effects, round after
    round: a consumer decides later settlements of a batch by the Python, Redis holds the
    Lua's result, so the two must never part."""
    rng = random.Random(15)
    codes = [f.cn20() for _ in range(40)]
    model: dict[str, CodeState | None] = {}
    for _ in range(150):
        effects = [_random_effect(rng, codes) for _ in range(rng.randint(1, 30))]
        for effect in effects:
            model[effect.canonical] = apply_effect(model.get(effect.canonical), effect)
        await store.apply(effects)
        seen = await store.read(codes)
        assert {c: seen[c].state for c in codes} == {c: model.get(c) for c in codes}


async def test_a_claim_the_gate_released_does_not_come_back_when_recorded_late(
    redis: Redis, store: FirstSeenStore,
) -> None:
    """The gate claims, then reverses before a consumer records the sale: the sale's effect,
    applied after its record commits, must not claim the code again (a resale would be
    refused as a second payment until the reversal is recorded too)."""
    code, first = f.cn20(), FirstPayment("S1", "I1", dt.datetime.fromtimestamp(DAY, dt.UTC))
    held = CodeState(7, 1, DAY)
    assert (await store.claim([ClaimChange(code, 1, 7, None, held)], {code: first})).landed
    released = await store.change([code], lambda states: [
        ClaimChange(code, 1, 7, states[code], None)], mark_releases=True)
    assert released is not None

    await store.apply([ClaimEffect(Effect.CLAIM, code, 7, 1, DAY, 0, 0)], forget=[code])
    assert await store.read([code]) == {code: Seen(None, None)}
    await store.apply([ClaimEffect(Effect.RELEASE, code, 7, 1, DAY, 0, 0)])
    group = store.layout.address(code).group
    assert await redis.hlen(store.layout.pending_key(group)) <= 1  # the filler field only
    resale = ClaimChange(code, 1, 9, None, CodeState(9, 1, DAY))
    assert (await store.claim([resale], {code: first})).landed


async def test_units_the_gate_gave_back_are_not_sold_again_when_recorded_late(
    store: FirstSeenStore,
) -> None:
    code = f.cn20()
    opened = CodeState(7, 1, DAY, 4, 10, (7,))
    assert (await store.claim([ClaimChange(code, 1, 7, None, opened, 4)], {})).landed
    assert await store.change([code], lambda states: [
        ClaimChange(code, 1, 7, states[code], None, -4)], mark_releases=True)

    await store.apply([ClaimEffect(Effect.SELL_UNITS, code, 7, 1, DAY, 4, 10)])
    assert await store.read([code]) == {code: Seen(None, None)}


def _random_effect(rng: random.Random, codes: list[str]) -> ClaimEffect:
    return ClaimEffect(rng.choice(list(Effect)), rng.choice(codes), rng.randint(1, 5),
                       rng.randint(1, 3), DAY, rng.randint(1, 6), 20)


async def test_effects_wait_while_a_group_is_rebuilt(
    redis: RedisClient, store: FirstSeenStore,
) -> None:
    code = f.cn20()
    await redis.delete(store.layout.generation_key(store.layout.address(code).group))
    with pytest.raises(HotSetRebuilding):
        await store.apply([ClaimEffect(Effect.CLAIM, code, 7, 1, DAY, 0, 0)])


async def test_keys_read_beside_the_codes_may_hold_any_character(
    redis: Redis, store: FirstSeenStore,
) -> None:
    """A settlement id is the client's text: a key built from it, with spaces and quotes,
    comes back as itself and leaves the codes' values where they belong."""
    code = f.cn20()
    await store.apply([ClaimEffect(Effect.CLAIM, code, 7, 1, DAY, 0, 0)])
    odd = "tg:recent:s:x' OR '1'='1"
    await redis.set(odd, b"answer")
    read = await store.read_for_gate([code], [odd, "tg:absent"])
    assert read.values == [b"answer", None]
    assert read.seen[code] == Seen(CodeState(7, 1, DAY), None)
