"""The in-process cache for rarely changing data (institutions, API keys): entries expire,
and a cache built to refresh ahead shares its loads and never lets a key in use expire."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from service.kit.ttl_cache import TtlCache, VersionedCache


class _Source:
    """What a load would read (PostgreSQL, in the service), counting what it was asked."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows
        self.asked: list[list[str]] = []

    async def load(self, keys: list[str]) -> dict[str, int]:
        self.asked.append(keys)
        return {key: self.rows[key] for key in keys if key in self.rows}


async def test_many_loads_only_the_misses_once_and_leaves_unknown_keys_uncached() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0)
    source = _Source({"a": 1, "b": 2})
    assert await cache.get_many_or_load(["a", "b", "a", "x"], source.load) == {"a": 1, "b": 2}
    source.rows["x"] = 3  # registered a moment later
    assert await cache.get_many_or_load(["b", "x"], source.load) == {"b": 2, "x": 3}
    assert source.asked == [["a", "b", "x"], ["x"]]


async def test_entries_expire() -> None:
    cache: TtlCache[str, int] = TtlCache(0.0)
    source = _Source({"a": 1})
    await cache.get_many_or_load(["a"], source.load)
    source.rows["a"] = 2
    assert await cache.get_many_or_load(["a"], source.load) == {"a": 2}
    assert len(source.asked) == 2


class _Gated(_Source):
    """A load that waits until let go, as a query under way does."""

    def __init__(self, rows: dict[str, int]) -> None:
        super().__init__(rows)
        self.gate = asyncio.Event()

    async def load(self, keys: list[str]) -> dict[str, int]:
        self.asked.append(keys)
        await self.gate.wait()
        return {key: self.rows[key] for key in keys if key in self.rows}


async def test_without_refresh_each_caller_loads_its_own_misses() -> None:
    """The request-scoped loaders (a drug's pack size, in the request's session) stay so."""
    cache: TtlCache[str, int] = TtlCache(60.0)
    source = _Gated({"a": 1})
    calls = [asyncio.create_task(cache.get_many_or_load(["a"], source.load)) for _ in range(3)]
    await asyncio.sleep(0)
    source.gate.set()
    assert [await call for call in calls] == [{"a": 1}] * 3
    assert source.asked == [["a"]] * 3


async def test_a_key_wanted_by_many_callers_at_once_is_loaded_once() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, refresh_after_s=30.0)
    source = _Gated({"a": 1, "b": 2})
    calls = [asyncio.create_task(cache.get_many_or_load(keys, source.load))
             for keys in (["a"], ["a", "b"], ["b"], ["a"])]
    await asyncio.sleep(0)
    source.gate.set()
    assert [await call for call in calls] == [{"a": 1}, {"a": 1, "b": 2}, {"b": 2}, {"a": 1}]
    assert source.asked == [["a"], ["b"]]


async def test_an_entry_due_for_refresh_is_answered_at_once_and_reloaded_once() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, refresh_after_s=0.0)
    source = _Gated({"a": 1})
    source.gate.set()
    assert await cache.get_many_or_load(["a"], source.load) == {"a": 1}
    source.gate.clear()
    source.rows["a"] = 2
    # The reload is under way and waits: these callers do not, and start no other.
    assert await cache.get_many_or_load(["a"], source.load) == {"a": 1}
    assert await cache.get_many_or_load(["a"], source.load) == {"a": 1}
    source.gate.set()
    await asyncio.sleep(0.01)
    assert cache.peek("a") == 2
    assert source.asked == [["a"], ["a"]]


async def test_a_failed_refresh_keeps_the_entry_until_it_expires() -> None:
    """A revoked API key's refusal reaches its callers within the TTL; nothing is lost."""
    cache: TtlCache[str, int] = TtlCache(0.2, refresh_after_s=0.0)
    await cache.get_or_load("k", _value(1))
    assert await cache.get_or_load("k", _refused) == 1  # refreshed in the background: refused
    await asyncio.sleep(0)
    assert await cache.get_or_load("k", _refused) == 1  # still in its TTL
    await asyncio.sleep(0.25)
    with pytest.raises(LookupError, match="revoked"):
        await cache.get_or_load("k", _refused)
    assert cache.peek("k") is None


async def test_a_caller_gone_does_not_cancel_the_load_it_shared() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, refresh_after_s=30.0)
    source = _Gated({"a": 1})
    first = asyncio.create_task(cache.get_many_or_load(["a"], source.load))
    second = asyncio.create_task(cache.get_many_or_load(["a"], source.load))
    await asyncio.sleep(0)
    first.cancel()
    source.gate.set()
    assert await second == {"a": 1}
    assert first.cancelled()
    assert source.asked == [["a"]]


async def test_what_a_load_begun_before_clear_brings_is_not_kept() -> None:
    """An institution changed (VersionedCache.follow) while it was being read: the read may
    predate the change, so it answers its caller but is not cached."""
    cache: VersionedCache[str, int] = VersionedCache(60.0, refresh_after_s=30.0)
    source = _Gated({"a": 1})
    call = asyncio.create_task(cache.get_many_or_load(["a"], source.load))
    await asyncio.sleep(0)
    cache.follow(b"2")
    source.gate.set()
    assert await call == {"a": 1}
    assert cache.peek("a") is None


def _value(value: int) -> Callable[[], Awaitable[int]]:
    async def load() -> int:
        return value

    return load


async def _refused() -> int:
    raise LookupError("unknown or revoked API key")


async def test_a_key_forgotten_while_it_reloads_is_not_kept() -> None:
    """An API key revoked in this process while its background reload was reading it: the
    reload's answer predates the revocation, so it is not cached."""
    cache: TtlCache[str, int] = TtlCache(60.0, refresh_after_s=0.0)
    source = _Gated({"k": 1})
    source.gate.set()
    await cache.get_many_or_load(["k"], source.load)
    source.gate.clear()
    assert await cache.get_many_or_load(["k"], source.load) == {"k": 1}  # reload under way
    cache.forget("k")
    source.gate.set()
    await asyncio.sleep(0.01)
    assert cache.peek("k") is None
