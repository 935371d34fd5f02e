"""A small in-process cache whose entries expire: for data that changes rarely and may be
seconds stale (API keys, institutions), read on every gate call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = time.monotonic()
        hit = self._fresh(key, now)
        if hit is not None:
            return hit[1]
        value = await load()
        self._store(key, value, now)
        return value

    async def get_many_or_load(
        self, keys: Iterable[K], load: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> dict[K, V]:
        """Hits from the cache, the misses in one `load`; a key `load` does not return is
        absent from the answer and not cached (it may exist a moment later)."""
        now = time.monotonic()
        found: dict[K, V] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            hit = self._fresh(key, now)
            if hit is not None:
                found[key] = hit[1]
            else:
                missing.append(key)
        loaded = await load(missing) if missing else {}
        for key, value in loaded.items():
            self._store(key, value, now)
        return found | loaded

    def _fresh(self, key: K, now: float) -> tuple[float, V] | None:
        hit = self._entries.get(key)
        return hit if hit is not None and hit[0] > now else None

    def _store(self, key: K, value: V, now: float) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # crude but bounded; a full cache refills in seconds
        self._entries[key] = (now + self._ttl_s, value)

    def peek(self, key: K) -> V | None:
        """The entry if it is fresh; nothing is loaded."""
        hit = self._fresh(key, time.monotonic())
        return None if hit is None else hit[1]

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


class VersionedCache(TtlCache[K, V]):
    """A TtlCache that is also dropped whole whenever a version it is told moves: entries
    can live long (minutes) and still follow a change at once."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        super().__init__(ttl_s, max_entries)
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
            self._entries.clear()
