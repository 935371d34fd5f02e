"""What every fault scenario shares: its own topics and group, a report of faults injected and
promises checked, watching the record grow, and the end of a run (stream fed, group caught up,
consumer stopped cleanly, record audited)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from cli.devstack.servers import create_topics
from service.settings import Settings
from tests.faults.gate import Gate, open_gate
from tests.faults.processes import ConsumerProcess
from tests.faults.record import RecordAudit, audit
from tests.faults.stream import FeedProgress, feed, wait_group_caught_up
from tests.faults.workload import Workload, generate, institution_ids

# Smaller than the default 2,000: more batch boundaries for a fault to land between or in.
BATCH = 500
CATCH_UP_S = 240.0
# A paced feed runs at most this fraction of the stream ahead of the record.
LIVE_LEAD = 0.1


log = logging.getLogger(__name__)

@dataclass
class ScenarioReport:
    """Faults injected, figures, and per promise ("aspect") what was seen to break it."""

    scenario: str
    scale: str
    faults: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    broken: dict[str, list[str]] = field(default_factory=dict)
    workload: dict[str, int] = field(default_factory=dict)
    record: RecordAudit | None = None
    feed_resends: int = 0
    wall_s: float = 0.0

    def fault(self, text: str) -> None:
        self.faults.append(text)

    def observe(self, text: str) -> None:
        self.observations.append(text)

    def check(self, aspect: str, ok: bool, detail: str) -> bool:
        """Record `aspect` as checked; `detail` says what broke it when not `ok`."""
        problems = self.broken.setdefault(aspect, [])
        if not ok:
            problems.append(detail)
        return ok

    def failures(self, aspect: str) -> list[str]:
        assert aspect in self.broken, f"{aspect} was never checked in {self.scenario}"
        return self.broken[aspect]

    def record_failures(self, aspect: str) -> list[str]:
        """What broke one of the record's promises (record.ASPECTS)."""
        assert self.record is not None, f"{self.scenario} never audited its record"
        return self.record.problems(aspect)

    def problems(self) -> list[str]:
        found = [f"{aspect}: {p}" for aspect, ps in self.broken.items() for p in ps]
        return found + [f"record: {p}" for p in (self.record.problems() if self.record else [])]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "scale": self.scale, "wall_s": round(self.wall_s, 1),
            "faults_injected": len(self.faults), "faults": self.faults,
            "workload": self.workload, "feed_resends": self.feed_resends,
            "record": self.record.figures() if self.record else None,
            "observations": self.observations,
            "aspects": {aspect: ("ok" if not ps else ps) for aspect, ps in self.broken.items()},
            "problems": self.problems(),
        }


def isolated(base: Settings, name: str, **overrides: Any) -> Settings:
    """`base` with topics and a consumer group of its own (created now), so the scenario
    neither sees nor disturbs anyone else's events."""
    tag = f"{name}-{secrets.token_hex(3)}"
    values = base.model_dump() | {
        "topic_settlements": f"faults.{tag}.settlements", "topic_flags": f"faults.{tag}.flags",
        "topic_dlq": f"faults.{tag}.dlq", "consumer_group": f"faults-{tag}",
        "consumer_max_batch": BATCH,
    } | overrides
    settings = Settings(**values)
    create_topics(settings.kafka_bootstrap, settings.topic_settlements, settings.topic_flags,
                  settings.topic_dlq, settings.settlements_partitions)
    return settings


# Another session is writing a batch to the record: its transaction is open and has run an
# INSERT (so the batch's claims are already made in Redis, and not yet committed here).
_BATCH_WRITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND xact_start IS NOT NULL
  AND query ILIKE 'insert%'
"""


async def wait_for_batch_writing(dsn: str, timeout_s: float) -> bool:
    """True as soon as a consumer is writing a batch to the record (nobody else may be
    writing to the database meanwhile); False if none did within `timeout_s`."""
    connection = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await connection.fetchval(_BATCH_WRITING):
                return True
        return False
    finally:
        await connection.close()


def new_run() -> int:
    """Numbers every id and code of a run: runs sharing a database never meet."""
    return secrets.randbelow(10**6)


class RecordedCount:
    """How many of the run's settlements PostgreSQL holds (it only grows)."""

    def __init__(self, dsn: str, prefix: str) -> None:
        self._dsn = dsn
        self._pattern = prefix + "%"
        self.last = 0

    async def now(self) -> int:
        connection = await asyncpg.connect(self._dsn, timeout=5)
        try:
            count: int = await connection.fetchval(
                "SELECT count(*) FROM settlements WHERE settlement_id LIKE $1", self._pattern)
        finally:
            await connection.close()
        self.last = count
        return count

    async def grows(self, within_s: float) -> bool:
        """True as soon as the count moves; False if it stood still for `within_s`."""
        start = await self.now()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if await self.now() > start:
                return True
        return False


@dataclass
class StreamRun:
    """A workload fed to one consumer process while the scenario injects its faults."""

    settings: Settings
    workload: Workload
    consumer: ConsumerProcess
    report: ScenarioReport
    progress: FeedProgress
    recorded: RecordedCount
    feeding: asyncio.Task[None] | None = None
    # The feed waits at this fraction until the scenario moves it on: a fault's recovery
    # checks can outlast the rest of a paced feed, and a fault must meet a live stream.
    held_at: float = 0.0  # 0: no hold

    @property
    def settlements(self) -> int:
        return len(self.workload.truth.settlements)

    def start(self, codes_per_s: float | None) -> None:
        """Paced at `codes_per_s`: a live stream, kept at most LIVE_LEAD ahead of the record;
        else everything at once (a backlog)."""
        self.consumer.start()
        self.feeding = asyncio.create_task(feed(
            self.settings.kafka_bootstrap, self.settings.topic_settlements,
            self.workload.chunks, self.progress, codes_per_s=codes_per_s,
            before_chunk=self._keep_live if codes_per_s else None))

    async def _keep_live(self, fed: float) -> None:
        """A fault injected at some fraction of the record must land in a live stream: on a
        busy machine the checks before a fault can take longer than feeding the rest, and
        the consumer would have recorded everything by then (CI saw this)."""
        while fed > min(self.recorded.last / self.settlements + LIVE_LEAD, self.held_at or 1.0):
            await asyncio.sleep(0.05)
            with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
                await self.recorded.now()  # PostgreSQL may be the server that is away

    async def reach(
        self, fraction: float, at_least: int = 0, timeout_s: float = 120.0,
        until: float = 1.0,
    ) -> bool:
        """Wait until `fraction` of the stream's settlements (and `at_least` of them) is
        recorded; False (and the progress promise broken) if that took over `timeout_s`.
        A paced feed then goes on only to `until` (the next fault's point) while this fault
        runs, so the stream is live during it and still live at the next one."""
        self.held_at = max(self.held_at, until, fraction + LIVE_LEAD)
        target = max(int(fraction * len(self.workload.truth.settlements)), at_least)
        deadline = time.monotonic() + timeout_s
        while await self.recorded.now() < target:
            self.revive()
            if time.monotonic() > deadline:
                return self.report.check(
                    "consumers_progress", False,
                    f"stalled at {self.recorded.last} recorded settlements, waiting for {target}")
            await asyncio.sleep(0.05)
        return True

    @contextlib.contextmanager
    def unheld(self) -> Iterator[None]:
        """For a fault that needs traffic while it waits for its moment (a batch being
        written): within the block the feed keeps only LIVE_LEAD ahead of the record; after
        it, it is held again, a little past where the record stands."""
        held, self.held_at = self.held_at, 0.0
        try:
            yield
        finally:
            self.held_at = max(held, self.recorded.last / self.settlements + LIVE_LEAD)

    async def progresses(self, within_s: float) -> str | None:
        """After a fault: None as soon as the record grows, or once there is nothing left to
        record (the feed is done and the group committed past every event: a consumer may
        drain its backlog while the gate is still becoming ready); else what stood still."""
        self.held_at = min(1.0, self.held_at + LIVE_LEAD) if self.held_at else 0.0
        start = await self.recorded.now()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if await self.recorded.now() > start or await self._consumed_all():
                return None
            await asyncio.sleep(0.25)
        return (f"the record stood at {start} of {self.settlements} settlements for "
                f"{within_s:.0f}s")

    async def _consumed_all(self) -> bool:
        assert self.feeding is not None
        return self.feeding.done() and not await wait_group_caught_up(
            self.settings.kafka_bootstrap, self.settings.topic_settlements,
            self.settings.consumer_group, 0.0, self.revive)

    def revive(self) -> None:
        """A consumer that exited by itself breaks a promise; it is started again (as a
        supervisor would) so that the rest of the run still shows what it can."""
        if not self.report.check(
            "consumers_survive", self.consumer.alive(),
            f"{self.consumer.name} exited ({self.consumer.returncode}) by itself "
            f"with {self.recorded.last} settlements recorded; started again"):
            self.consumer.start()

    async def finish(self) -> None:
        await self.drain()
        await self.close()

    async def drain(self) -> None:
        """Feed to the end and let the group commit past every event."""
        assert self.feeding is not None
        self.held_at = 0.0
        await self.feeding
        self.report.feed_resends = self.progress.resends
        behind = await wait_group_caught_up(
            self.settings.kafka_bootstrap, self.settings.topic_settlements,
            self.settings.consumer_group, CATCH_UP_S, self.revive)
        self.report.check("consumers_progress", behind == 0,
                          f"the group is still {behind} events behind after {CATCH_UP_S:.0f}s")

    async def close(self, others: Sequence[ConsumerProcess] = ()) -> None:
        """Stop the consumer and `others` (each must be alive and leave cleanly), audit the
        record. All at once, as a supervisor stops a group: stopped one after another, each
        leaving starts a rebalance that the next one's last commit has to sit out."""
        consumers = [self.consumer, *others]
        for consumer in consumers:
            self.report.check("consumers_survive", consumer.alive(),
                              f"{consumer.name} exited ({consumer.returncode}) by itself")
        codes = await asyncio.gather(*(asyncio.to_thread(c.stop) for c in consumers))
        for consumer, code in zip(consumers, codes, strict=True):
            self.report.check("consumers_survive", code == 0,
                              f"{consumer.name} did not stop cleanly on SIGTERM (exit {code})")
        self.report.record = await audit(self.settings, self.workload.truth)

    async def abandon(self) -> None:
        if self.feeding is not None and not self.feeding.done():
            self.feeding.cancel()
            await asyncio.gather(self.feeding, return_exceptions=True)
        await asyncio.to_thread(self.consumer.stop)


@asynccontextmanager
async def stream_run(
    settings: Settings, workload: Workload, consumer: ConsumerProcess, report: ScenarioReport,
) -> AsyncIterator[StreamRun]:
    """The run; the feeder and the consumer are stopped on the way out whatever happened."""
    report.workload = workload.figures()
    run = StreamRun(settings, workload, consumer, report, FeedProgress(len(workload.chunks)),
                    RecordedCount(settings.asyncpg_dsn, workload.truth.prefix))
    try:
        yield run
    finally:
        await run.abandon()


INSTITUTIONS = 6  # institutions of a gated scenario's workload


@asynccontextmanager
async def gated_stream(
    settings: Settings, workdir: Path, report: ScenarioReport, codes: int,
) -> AsyncIterator[tuple[StreamRun, Gate, int]]:
    """A fresh workload of `codes` codes fed to one consumer process, and an in-process gate
    on the same servers with the workload's institutions registered; (stream, gate, run)."""
    run = new_run()
    institutions = institution_ids(run, INSTITUTIONS)
    workload = await asyncio.to_thread(
        generate, run, institutions, codes, settings.settlements_partitions)
    consumer = ConsumerProcess(
        "consumer", settings, workdir / f"{report.scenario}-{run}-consumer.log")
    async with open_gate(settings) as gate:
        await gate.register(institutions)
        async with stream_run(settings, workload, consumer, report) as stream:
            yield stream, gate, run


async def timed(scenario: Awaitable[ScenarioReport]) -> ScenarioReport:
    """Run a scenario; its report gets the wall time it took, setting up included, and is
    logged whole (pytest shows it with a failure)."""
    begin = time.monotonic()
    report = await scenario
    report.wall_s = time.monotonic() - begin
    log.warning("%s scenario: %s", report.scenario, report.to_json())
    return report
