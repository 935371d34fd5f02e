"""Baseline (d) orchestration: the stream benchmark (loadtest/stream.py) with baseline (d)'s
consumer (loadtest/baselines/postgres_batched) in place of `tracegate consume`: the same
workload produced the same way, the same clock (first produce -> every offset committed),
the same CPU meter by role, the same check against the ground truth. Its record is the real
migrations' tables in a database of its own on the same server, so the row counts compare
with tracegate's and its runs leave tracegate's record alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg

from cli.migrate import upgrade_to_head
from loadtest.stack import Stack, register
from loadtest.stats import median, median_by_role
from loadtest.stream import StreamRun, run_stream
from loadtest.truth import score_of_checks
from loadtest.workload import Workload

COMMAND = ("-m", "loadtest.baselines.postgres_batched")
DATABASE = "tracegate_baseline"


def run_postgres_batched(stack: Stack, workload: Workload, repeats: int) -> dict[str, Any]:
    run = batched_runner(stack, workload)
    return summary([run(n) for n in range(repeats)])


def batched_runner(stack: Stack, workload: Workload) -> Callable[[int], StreamRun]:
    """Run n of baseline (d), on its own database (made ready here, once)."""
    own = own_database(stack, workload)
    return lambda n: run_stream(own, workload, 1, 0.0, f"pgb{n}", command=COMMAND)


def own_database(stack: Stack, workload: Workload) -> Stack:
    """The stack with PostgreSQL's `tracegate_baseline` database (created and migrated once)
    in place of tracegate's; the servers and the children stopped on close are shared."""
    asyncio.run(_create(stack.dsn))
    url = stack.postgres.url.rsplit("/", 1)[0] + f"/{DATABASE}"
    own = replace(stack, postgres=replace(stack.postgres, url=url))
    upgrade_to_head(own.postgres.url)
    asyncio.run(register(own.dsn, workload.institutions))
    return own


async def _create(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        if not await connection.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


def summary(runs: list[StreamRun]) -> dict[str, Any]:
    """Medians over the runs; the flags scored on the first run that was not exact (or the
    first run), every run's figures and checks kept."""
    figures = [run.to_json() for run in runs]
    shown = next((f for f in figures if not f["correct"]), figures[0])
    return {
        "codes": runs[0].codes, "codes_per_s": round(median([r.codes_per_s for r in runs])),
        "cpu_us_per_code": median_by_role([f["cpu_us_per_code"] for f in figures]),
        "correct": all(run.correct for run in runs),
        "flags": score_of_checks(shown["checks"]), "record": shown["checks"]["record"],
        "runs": figures,
        "measured": "as the stream: first produce -> every offset committed (recorded in "
                    "PostgreSQL, flags acknowledged by Kafka), one consumer process",
    }
