"""`tracegate loadtest rebuild`: codes per second rebuilding the first-seen set from
PostgreSQL with the production code (service.firstseen.rebuild.rebuild), the CPU each role
spent a code (the rebuilding process, PostgreSQL, Redis), and whether the rebuilt set is
exactly what the gate's own Python encoding gives for the loaded claims. Setup bulk-loads
`code_claims` with COPY (whole-pack claims: split packs add a code_events lookup per chunk
that this figure does not include)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
from redis.asyncio import Redis

from cli.devstack.process import tree_cpu_seconds
from loadtest.memory import layout_for
from loadtest.stack import reset_record
from loadtest.stats import median
from loadtest.workload import Institution
from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen.encoding import Layout, encode_state
from service.firstseen.rebuild import rebuild
from service.kit import event_loop
from service.records import claims_export

_PAID = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
_COLUMNS = ["code", "settlement_id", "line_no", "institution_id", "paid_at", "units_used",
            "pack_size", "first_seen_at"]
_READ_BACK = 2000  # buckets read per pipeline when checking the set


def run_rebuild(
    dsn: str, redis_url: str, postgres_pid: int, institutions: Sequence[Institution],
    codes: int, repeats: int, progress: Callable[[int], None],
) -> dict[str, Any]:
    return event_loop.run(_run(dsn, redis_url, postgres_pid, institutions, codes, repeats,
                               progress))


async def _run(
    dsn: str, redis_url: str, postgres_pid: int, institutions: Sequence[Institution],
    codes: int, repeats: int, progress: Callable[[int], None],
) -> dict[str, Any]:
    """The record is loaded once and the set rebuilt `repeats` times into an empty Redis."""
    await reset_record(dsn)
    ids = [i.institution_id for i in institutions]
    load_s = await _load(dsn, ids, codes)
    layout = layout_for(codes)
    expected = _expected(await _numbers(dsn), ids, codes, layout)
    redis = Redis.from_url(redis_url)
    try:
        runs = []
        for _ in range(repeats):
            run = await _rebuild_once(dsn, redis, postgres_pid, layout, progress)
            runs.append({**run, "correct": await _read_back(redis) == expected})
    finally:
        await redis.aclose()
    await reset_record(dsn)
    return {"codes": runs[0]["codes"], "copy_load_s": round(load_s, 2),
            "codes_per_s": round(median([r["codes_per_s"] for r in runs])),
            "cpu_us_per_code": {role: median([r["cpu_us_per_code"][role] for r in runs])
                                for role in runs[0]["cpu_us_per_code"]},
            "correct": all(r["correct"] for r in runs), "runs": runs}


async def _rebuild_once(
    dsn: str, redis: Redis, postgres_pid: int, layout: Layout, progress: Callable[[int], None]
) -> dict[str, Any]:
    """Wall time, and the CPU this process, PostgreSQL (its backends' included, reaped or
    not) and Redis spent."""
    await redis.flushall()
    before = await _cpu(redis, postgres_pid)
    began = time.perf_counter()
    written = await rebuild(dsn, redis, layout, progress)
    seconds = time.perf_counter() - began
    spent = {role: now - before[role]
             for role, now in (await _cpu(redis, postgres_pid)).items()}
    return {"codes": written, "seconds": round(seconds, 3),
            "codes_per_s": round(written / seconds),
            "cpu_s": {role: round(s, 2) for role, s in spent.items()},
            "cpu_us_per_code": {role: round(s / written * 1e6, 3) for role, s in spent.items()}}


async def _cpu(redis: Redis, postgres_pid: int) -> dict[str, float]:
    info = await redis.info("cpu")
    return {"rebuilder": time.process_time(), "postgres": tree_cpu_seconds(postgres_pid),
            "redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}


async def _numbers(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        return await claims_export.institution_numbers(connection)
    finally:
        await connection.close()


def _expected(numbers: dict[str, int], institutions: list[str], codes: int,
              layout: Layout) -> dict[bytes, tuple[int, int]]:
    """Every bucket the loaded claims fill, as the gate and the consumers address and encode
    them in Python (not through the rebuild's SQL or its compiled loader)."""
    buckets: defaultdict[bytes, tuple[int, int]] = defaultdict(lambda: (0, 0))
    paid_at = int(_PAID.timestamp())
    for code, sid, line_no, institution, *_ in _rows(institutions, codes):
        group, bucket, field = layout.locate(code)
        value = encode_state(CodeState(owner_token(sid, line_no), numbers[institution],
                                       paid_at))
        key = layout.bucket_key(group, bucket).encode()
        buckets[key] = _with(buckets[key], field, value)
    return dict(buckets)


def _with(bucket: tuple[int, int], field: bytes, value: bytes) -> tuple[int, int]:
    """(fields, an order-free digest of them and their values) with one more."""
    digest = int.from_bytes(hashlib.blake2b(field + value, digest_size=8).digest(), "big")
    return bucket[0] + 1, (bucket[1] + digest) % (1 << 64)


async def _read_back(redis: Redis) -> dict[bytes, tuple[int, int]]:
    """Every bucket of the rebuilt set, in the same form as `_expected`."""
    keys = [key async for key in redis.scan_iter(match="tg:fs{*", count=10_000)]
    buckets: dict[bytes, tuple[int, int]] = {}
    for start in range(0, len(keys), _READ_BACK):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + _READ_BACK]:
                pipe.hgetall(key)
            for key, fields in zip(keys[start:], await pipe.execute(), strict=False):
                bucket = (0, 0)
                for field, value in fields.items():
                    bucket = _with(bucket, field, value)
                buckets[key] = bucket
    return buckets


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
