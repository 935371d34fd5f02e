"""`tracegate loadtest rebuild`: codes per second rebuilding the first-seen set from
PostgreSQL with the production code (service.firstseen.rebuild.rebuild). Setup bulk-loads
`code_claims` with COPY (whole-pack claims: split packs add a code_events lookup per chunk
that this figure does not include)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
from redis.asyncio import Redis

from loadtest.memory import layout_for
from loadtest.stack import reset_record
from loadtest.stats import median
from loadtest.workload import Institution
from service.firstseen.rebuild import rebuild
from service.kit import event_loop

_PAID = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
_COLUMNS = ["code", "settlement_id", "line_no", "institution_id", "paid_at", "units_used",
            "pack_size", "first_seen_at"]


def run_rebuild(
    dsn: str, redis_url: str, institutions: Sequence[Institution], codes: int, repeats: int,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    return event_loop.run(_run(dsn, redis_url, institutions, codes, repeats, progress))


async def _run(
    dsn: str, redis_url: str, institutions: Sequence[Institution], codes: int, repeats: int,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    """The record is loaded once and the set rebuilt `repeats` times into an empty Redis."""
    await reset_record(dsn)
    load_s = await _load(dsn, [i.institution_id for i in institutions], codes)
    redis = Redis.from_url(redis_url)
    try:
        runs = [await _rebuild_once(dsn, redis, codes, progress) for _ in range(repeats)]
    finally:
        await redis.aclose()
    await reset_record(dsn)
    return {"codes": runs[0]["codes"], "copy_load_s": round(load_s, 2),
            "codes_per_s": round(median([r["codes_per_s"] for r in runs])), "runs": runs}


async def _rebuild_once(
    dsn: str, redis: Redis, codes: int, progress: Callable[[int], None]
) -> dict[str, Any]:
    """Wall time, and the CPU this process and Redis spent (PostgreSQL's is the rest)."""
    await redis.flushall()
    redis_cpu, client_cpu = await _redis_cpu(redis), time.process_time()
    began = time.perf_counter()
    written = await rebuild(dsn, redis, layout_for(codes), progress)
    seconds = time.perf_counter() - began
    return {"codes": written, "seconds": round(seconds, 3),
            "codes_per_s": round(written / seconds),
            "client_cpu_s": round(time.process_time() - client_cpu, 2),
            "redis_cpu_s": round(await _redis_cpu(redis) - redis_cpu, 2)}


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _load(dsn: str, institutions: list[str], codes: int) -> float:
    connection = await asyncpg.connect(dsn)
    began = time.perf_counter()
    try:
        await connection.copy_records_to_table(
            "code_claims", records=_rows(institutions, codes), columns=_COLUMNS)
        await connection.execute("ANALYZE code_claims")
    finally:
        await connection.close()
    return time.perf_counter() - began


def _rows(institutions: list[str], codes: int) -> Iterator[tuple[Any, ...]]:
    for i in range(codes):
        yield (f"8{i % 900_000 + 100_000:06d}{i:013d}", f"S-RB-{i // 3:09d}", i % 3 + 1,
               institutions[i % len(institutions)], _PAID, None, None, _PAID)
