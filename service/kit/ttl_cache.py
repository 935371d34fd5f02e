"""A small in-process cache whose entries expire: for data that changes rarely and may be
seconds stale (API keys, institutions), read on every gate call.

A cache read on every call of a busy gate must not let its entries expire under its callers:
at 2,000 calls/s an API key's entry expiring sent every call of the next few milliseconds to
PostgreSQL at once (each its own session and query), a burst of CPU that held every call of
its worker for 100-270 ms, once every TTL. With `refresh_after_s`, the first call past that
age starts one reload in the background and is answered from the entry, and a key loaded
while others want it is loaded once, for all of them. A cache so built needs loaders that do
not use their caller's scope (a request's session): they may run after that call has ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Load = Callable[[list[K]], Awaitable[dict[K, V]]]


class TtlCache(Generic[K, V]):
    def __init__(
        self, ttl_s: float, max_entries: int = 100_000, *, refresh_after_s: float | None = None
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._refresh_after_s = refresh_after_s
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expires at, value)
        self._loading: dict[K, asyncio.Task[dict[K, V]]] = {}  # shared loads, by key
        self._generation = 0  # moved by clear(): an unshared load begun before stores nothing

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """`load` raises for a key that does not exist (nothing is cached then)."""
        hit, now = self._entries.get(key), time.monotonic()
        if hit is not None and hit[0] > now and not self._due(hit[0], now):
            return hit[1]  # nearly every call (an API key's): no list, no closure

        async def one(keys: list[K]) -> dict[K, V]:
            return {key: await load()}

        return (await self.get_many_or_load([key], one))[key]

    async def get_many_or_load(self, keys: Iterable[K], load: Load[K, V]) -> dict[K, V]:
        """Hits from the cache, the misses in one `load`; a key `load` does not return is
        absent from the answer and not cached (it may exist a moment later)."""
        now = time.monotonic()
        found: dict[K, V] = {}
        missing: list[K] = []
        stale: list[K] = []
        for key in dict.fromkeys(keys):
            hit = self._entries.get(key)
            if hit is None or hit[0] <= now:
                missing.append(key)
                continue
            found[key] = hit[1]
            if self._due(hit[0], now) and key not in self._loading:
                stale.append(key)
        if stale:
            self._start(stale, load)  # in the background: these are answered from the entry
        if missing:
            found |= await self._loaded(missing, load)
        return found

    def _due(self, expires_at: float, now: float) -> bool:
        refresh = self._refresh_after_s
        return refresh is not None and now >= expires_at - self._ttl_s + refresh

    async def _loaded(self, keys: list[K], load: Load[K, V]) -> dict[K, V]:
        if self._refresh_after_s is None:  # loads not shared: the caller's own
            generation = self._generation
            loaded = await load(keys)
            if generation == self._generation:
                self._store_all(loaded)
            return loaded
        waits = {self._loading[key] for key in keys if key in self._loading}
        rest = [key for key in keys if key not in self._loading]
        if rest:
            waits.add(self._start(rest, load))
        found: dict[K, V] = {}
        for task in waits:
            found |= await asyncio.shield(task)  # a caller gone does not cancel the others'
        return {key: found[key] for key in keys if key in found}

    def _start(self, keys: list[K], load: Load[K, V]) -> asyncio.Task[dict[K, V]]:
        task = asyncio.ensure_future(load(keys))
        for key in keys:
            self._loading[key] = task
        task.add_done_callback(lambda done: self._finished(keys, done))
        return task

    def _finished(self, keys: list[K], task: asyncio.Task[dict[K, V]]) -> None:
        """Keeps what the load brought for the keys it still loads for: a key forgotten
        (a revoked API key) or cleared (a version moved) while it ran is not kept."""
        ours = [key for key in keys if self._loading.get(key) is task]
        for key in ours:
            del self._loading[key]
        if task.cancelled():
            return
        if task.exception() is None:
            loaded = task.result()
            self._store_all({key: loaded[key] for key in ours if key in loaded})
        # A background reload that failed leaves the entry to expire as it would have (a
        # revoked key's refusal reaches its callers within the TTL, as documented); its error
        # was taken above, so that asyncio does not report it as lost.

    def _store_all(self, loaded: dict[K, V]) -> None:
        now = time.monotonic()
        for key, value in loaded.items():
            self._store(key, value, now)

    def _store(self, key: K, value: V, now: float) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # crude but bounded; a full cache refills in seconds
        self._entries[key] = (now + self._ttl_s, value)

    def peek(self, key: K) -> V | None:
        """The entry if it is fresh; nothing is loaded."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)  # a shared load under way keeps nothing for it

    def clear(self) -> None:
        """Every entry, and what loads under way would have stored."""
        self._entries.clear()
        self._loading.clear()
        self._generation += 1


class VersionedCache(TtlCache[K, V]):
    """A TtlCache that is also dropped whole whenever a version it is told moves: entries
    can live long (minutes) and still follow a change at once."""

    def __init__(
        self, ttl_s: float, max_entries: int = 100_000, *, refresh_after_s: float | None = None
    ) -> None:
        super().__init__(ttl_s, max_entries, refresh_after_s=refresh_after_s)
        self._version: bytes | None = None
        self._followed = False

    @property
    def version(self) -> tuple[bytes | None] | None:
        """The version the entries follow, once one was told (a 1-tuple: None is a version,
        the key not set)."""
        return (self._version,) if self._followed else None

    def follow(self, version: bytes | None) -> None:
        if version != self._version or not self._followed:
            self._version, self._followed = version, True
            self.clear()
