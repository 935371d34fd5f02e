"""A small in-process cache whose entries expire: for data that changes rarely and may be
seconds stale (API keys, institutions), read on every gate call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # crude but bounded; a full cache refills in seconds
        self._entries[key] = (now + self._ttl_s, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
