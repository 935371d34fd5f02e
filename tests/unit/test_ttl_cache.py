"""The in-process cache for rarely changing data (institutions, API keys)."""

from __future__ import annotations

from service.kit.ttl_cache import TtlCache


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
