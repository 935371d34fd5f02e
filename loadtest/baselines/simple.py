"""Baselines (a) and (b): first-seen detection of the same codes, the naive ways.

(a) one Redis key per code, SET NX, one round trip per code;
(b) PostgreSQL only, INSERT ... ON CONFLICT DO NOTHING RETURNING per code (autocommit).
Both only answer "first or duplicate" per code: no decision rules, no record, no flags topic,
so they do less work than tracegate per code; the ratios are conservative for tracegate. Each
says which codes it judged duplicates, scored against the code re-use the ground truth expects
of the same events (a redelivery, a resale after a reversal or more units from an opened pack
are duplicates to them, and false flags to the truth)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from cli.devstack.process import cpu_seconds
from loadtest.cpu import per_unit_us
from loadtest.truth import REUSE_ONLY, SoldCode, reuse_flags, score, simulate
from loadtest.workload import Workload
from service.kit import event_loop


@dataclass(frozen=True)
class Sample:
    """The workload's first events, whole, until `limit` codes, in production order
    (redeliveries included), as the consumers see them: each code with where it was sold,
    and the code re-use the ground truth expects among those events."""

    sold: list[SoldCode]
    expected: set[SoldCode]

    @property
    def codes(self) -> list[str]:
        return [code for _, _, code in self.sold]


def sample(workload: Workload, limit: int) -> Sample:
    sold: list[SoldCode] = []
    events = 0
    while len(sold) < limit and events < len(workload.events):
        body = workload.events[events].body
        sold += [(body["settlement_id"], line["line_no"], code)
                 for line in body.get("lines", []) for code in line["trace_codes"]]
        events += 1
    truth = simulate(workload.institutions, [e.body for e in workload.events[:events]])
    return Sample(sold, reuse_flags(truth.flags))


def run_redis_key_per_code(
    redis_url: str, codes: Sample, progress: Callable[[int], None]
) -> dict[str, Any]:
    return event_loop.run(_redis(redis_url, codes, progress))


async def _redis(
    redis_url: str, codes: Sample, progress: Callable[[int], None]
) -> dict[str, Any]:
    client = Redis.from_url(redis_url)
    try:
        await client.flushall()
        async def first_seen(code: str) -> bool:
            return bool(await client.set(f"fs:{code}", b"1", nx=True))

        server = ("redis", int((await client.info("server"))["process_id"]))
        seconds, duplicates, cpu = await _one_by_one(codes.codes, first_seen, progress, server)
        used = int((await client.info("memory"))["used_memory"])
        await client.flushall()
    finally:
        await client.aclose()
    return _result(codes, seconds, duplicates, cpu, used_memory=used)


def run_postgres_only(
    dsn: str, codes: Sample, progress: Callable[[int], None]
) -> dict[str, Any]:
    return event_loop.run(_postgres(dsn, codes, progress))


async def _postgres(
    dsn: str, codes: Sample, progress: Callable[[int], None]
) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP TABLE IF EXISTS lt_first_seen; CREATE TABLE "
                                 "lt_first_seen (code text PRIMARY KEY)")
        statement = await connection.prepare(
            "INSERT INTO lt_first_seen VALUES ($1) ON CONFLICT DO NOTHING RETURNING code")
        async def first_seen(code: str) -> bool:
            return await statement.fetchval(code) is not None

        server = ("postgres", int(await connection.fetchval("SELECT pg_backend_pid()")))
        seconds, duplicates, cpu = await _one_by_one(codes.codes, first_seen, progress, server)
        await connection.execute("DROP TABLE lt_first_seen")
    finally:
        await connection.close()
    return _result(codes, seconds, duplicates, cpu,
                   table="logged; the ephemeral server has fsync off, as for tracegate")


async def _one_by_one(
    codes: Sequence[str], first_seen: Callable[[str], Awaitable[bool]],
    progress: Callable[[int], None], server: tuple[str, int],
) -> tuple[float, list[int], dict[str, float]]:
    """Ask about each code in turn, one round trip each: (seconds, where duplicates were, CPU
    seconds of this client and of the server process that answered, `server`: role, pid)."""
    role, pid = server
    began, duplicates = time.perf_counter(), []
    cpu = {"client": -time.process_time(), role: -cpu_seconds(pid)}
    for index, code in enumerate(codes):
        if not await first_seen(code):
            duplicates.append(index)
        if index % 1000 == 999:
            progress(1000)
    cpu["client"] += time.process_time()
    cpu[role] += cpu_seconds(pid)
    return time.perf_counter() - began, duplicates, cpu


def _result(codes: Sample, seconds: float, duplicates: list[int], cpu: dict[str, float],
            **extra: Any) -> dict[str, Any]:
    found = [codes.sold[index] for index in duplicates]
    flags = score(found, codes.expected, REUSE_ONLY)
    return {"codes": len(codes.sold), "seconds": round(seconds, 3),
            "codes_per_s": round(len(codes.sold) / seconds), "duplicates_seen": len(duplicates),
            "cpu_us_per_code": per_unit_us(cpu, len(codes.sold)), "flags": flags,
            "correct": flags["exact"], **extra}
