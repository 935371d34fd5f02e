"""Baselines (a) and (b): first-seen detection of the same codes, the naive ways.

(a) one Redis key per code, SET NX, one round trip per code;
(b) PostgreSQL only, INSERT ... ON CONFLICT DO NOTHING RETURNING per code (autocommit).
Both only answer "first or duplicate" per code: no decision rules, no record, no flags topic,
so they do less work than tracegate per code; the ratios are conservative for tracegate."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from redis.asyncio import Redis

from loadtest.workload import Workload
from service.kit import event_loop


def codes_of(workload: Workload, limit: int) -> list[str]:
    """Trace codes in production order (redeliveries included), as the consumers see them."""
    out: list[str] = []
    for event in workload.events:
        for line in event.body.get("lines", []):
            out += line["trace_codes"]
        if len(out) >= limit:
            break
    return out[:limit]


def run_redis_key_per_code(
    redis_url: str, codes: Sequence[str], progress: Callable[[int], None]
) -> dict[str, Any]:
    return event_loop.run(_redis(redis_url, codes, progress))


async def _redis(
    redis_url: str, codes: Sequence[str], progress: Callable[[int], None]
) -> dict[str, Any]:
    client = Redis.from_url(redis_url)
    try:
        await client.flushall()
        async def first_seen(code: str) -> bool:
            return bool(await client.set(f"fs:{code}", b"1", nx=True))

        seconds, duplicates = await _one_by_one(codes, first_seen, progress)
        used = int((await client.info("memory"))["used_memory"])
        await client.flushall()
    finally:
        await client.aclose()
    return _result(codes, seconds, duplicates, used_memory=used)


def run_postgres_only(
    dsn: str, codes: Sequence[str], progress: Callable[[int], None]
) -> dict[str, Any]:
    return event_loop.run(_postgres(dsn, codes, progress))


async def _postgres(
    dsn: str, codes: Sequence[str], progress: Callable[[int], None]
) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP TABLE IF EXISTS lt_first_seen; CREATE TABLE "
                                 "lt_first_seen (code text PRIMARY KEY)")
        statement = await connection.prepare(
            "INSERT INTO lt_first_seen VALUES ($1) ON CONFLICT DO NOTHING RETURNING code")
        async def first_seen(code: str) -> bool:
            return await statement.fetchval(code) is not None

        seconds, duplicates = await _one_by_one(codes, first_seen, progress)
        await connection.execute("DROP TABLE lt_first_seen")
    finally:
        await connection.close()
    return _result(codes, seconds, duplicates,
                   table="logged; the ephemeral server has fsync off, as for tracegate")


async def _one_by_one(
    codes: Sequence[str], first_seen: Callable[[str], Awaitable[bool]],
    progress: Callable[[int], None],
) -> tuple[float, int]:
    """Ask about each code in turn, one round trip each: (seconds, duplicates seen)."""
    began, duplicates = time.perf_counter(), 0
    for index, code in enumerate(codes):
        duplicates += not await first_seen(code)
        if index % 1000 == 999:
            progress(1000)
    return time.perf_counter() - began, duplicates


def _result(codes: Sequence[str], seconds: float, duplicates: int, **extra: Any) -> dict[str, Any]:
    return {"codes": len(codes), "seconds": round(seconds, 3),
            "codes_per_s": round(len(codes) / seconds), "duplicates_seen": duplicates, **extra}
