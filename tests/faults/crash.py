"""Issue 5 item 1: a `tracegate consume` process killed with SIGKILL at random moments of a
stream with known ground truth, restarted each time; the record must equal the truth."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from service.settings import Settings
from tests.faults.gate import open_gate
from tests.faults.processes import ConsumerProcess
from tests.faults.scale import Scale
from tests.faults.scenario import (
    ScenarioReport,
    isolated,
    new_run,
    stream_run,
    wait_for_batch_writing,
)
from tests.faults.workload import generate, institution_ids

INSTITUTIONS = 8


async def crash(base: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    settings = isolated(base, "crash")
    run = new_run()
    rng = random.Random(run)
    report = ScenarioReport("crash", scale.name)
    institutions = institution_ids(run, INSTITUTIONS)
    async with open_gate(settings) as gate:
        await gate.register(institutions)
    workload = await asyncio.to_thread(
        generate, run, institutions, scale.crash_codes, settings.settlements_partitions)
    consumer = ConsumerProcess("consumer", settings, workdir / f"crash-{run}-consumer.log")
    async with stream_run(settings, workload, consumer, report) as stream:
        stream.start(codes_per_s=None)  # a backlog: the consumer runs flat out between kills
        # Kill moments: random points of the record's progress; then every other kill comes
        # while the consumer writes a batch to PostgreSQL (its claims made in Redis, its
        # transaction not committed: the window a crash hurts most), the others after a random
        # delay, landing anywhere (deciding, publishing flags, marking them, committing
        # offsets, a rebalance). Each restarted consumer records something before its kill.
        fractions = sorted(rng.uniform(0.03, 0.92) for _ in range(scale.crash_kills))
        for number, fraction in enumerate(fractions):
            if not await stream.reach(fraction, at_least=stream.recorded.last + 1):
                break
            if number % 2 == 0:
                moment = "while it wrote a batch" if await wait_for_batch_writing(
                    settings.asyncpg_dsn, timeout_s=30.0) else "no batch seen being written"
            else:
                delay = rng.uniform(0.0, 0.4)
                await asyncio.sleep(delay)
                moment = f"{delay * 1000:.0f} ms later"
            if not consumer.alive():
                stream.revive()  # it exited by itself: a broken promise, not a kill
                continue
            consumer.kill()
            report.fault(f"SIGKILL consumer at {stream.recorded.last} of {stream.settlements} "
                         f"settlements recorded, {moment}")
            consumer.start()
        await stream.finish()
    report.observe(f"consumer started {consumer.starts} times, killed {consumer.kills}")
    return report
