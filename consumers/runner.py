"""`tracegate consume`: one process of the settlements consumer group. It only fetches, hands
each batch to the settlement's stream path (service/settlements/stream.py) and commits.

Offset discipline (as Quix Streams keeps it): auto-commit is off; a batch's offsets are
stored only after it is finished (its record committed to PostgreSQL, its effects in
Redis, its flags acknowledged by Kafka), in the order the batches came, and what is stored
is committed at checkpoints: once TRACEGATE_CONSUMER_COMMIT_INTERVAL_MS has passed since the
last commit, whenever a poll finds nothing new, on a rebalance and on stopping (a commit
after every batch was a broker round trip between one batch and the next), and never before
the batch's flags are marked published in the record. While one batch is
finished, the next is fetched and decided on what it decided (stream.py's `prepare` with its
`Ahead`); that batch is written only once the one before it is finished, and decided again
first if that one did not go as decided. A crash anywhere before that redelivers the batch,
which is harmless: the record holds what it wrote and the rest is decided again. On a
rebalance, finished work is committed before the partitions go; a batch whose partitions
were revoked while it ran is dropped, not retried (their new owner redelivers it)."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.telemetry import consumer_telemetry, observe_batch, sample_lag
from service.firstseen.store import HotSetRebuilding
from service.kit import event_loop
from service.kit.garbage_collection import BATCH_YOUNG_THRESHOLD, tune_for_throughput
from service.kit.heartbeat import Heartbeat
from service.kit.metrics import ConsumerMetrics
from service.records.partitions import PartitionKeeper
from service.settings import Settings
from service.settlements import presence
from service.settlements.events import Incoming
from service.settlements.stream import (
    Ahead,
    BatchReport,
    Prepared,
    StreamPorts,
    finish,
    prepare,
    process,
)

log = logging.getLogger(__name__)
Offsets = dict[TopicPartition, int]
Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
T = TypeVar("T")


def run_consumer(settings: Settings) -> int:
    tune_for_throughput(BATCH_YOUNG_THRESHOLD)
    event_loop.run(_consume_until_stopped(settings))
    return 0


async def _consume_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await consume(settings, stop)


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        group_instance_id=settings.consumer_instance_id or None,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=min(1000, settings.consumer_session_timeout_ms // 3),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.consumer_max_batch,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
    )


class _Offsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finished work not yet committed, and which partitions a rebalance took away."""

    def __init__(
        self, consumer: AIOKafkaConsumer, announce: _Presence,
        finished: Callable[[], Awaitable[None]], interval_s: float = 0.0,
    ) -> None:
        self.consumer = consumer
        self.announce = announce
        self.interval_s = interval_s
        self.finished = finished  # what finished batches still do (their flags' marks)
        self.done: Offsets = {}
        self._committed_at = -math.inf  # time.monotonic() of the last commit

    def store(self, finished: Offsets) -> None:
        """A finished batch's offsets, committed at the next checkpoint."""
        self.done.update(finished)

    async def checkpoint(self) -> None:
        """Commit what is finished if the last commit is `interval_s` old."""
        if time.monotonic() - self._committed_at >= self.interval_s:
            await self.commit()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.commit()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(tp.partition for tp in assigned))
        await self.announce.now(sorted(tp.partition for tp in assigned))

    async def commit(self) -> None:
        """Commit what is finished; a commit the group refuses (a rebalance took the
        partitions) never ends the process: their new owner redelivers that work."""
        if not self.done:
            return
        try:
            await self.finished()
        except Exception:  # noqa: BLE001 - uncommitted: the batches are redelivered
            log.warning("finished batches not marked done; their offsets stay", exc_info=True)
            return
        done, self.done = self.done, {}
        self._committed_at = time.monotonic()
        try:
            await self.consumer.commit(done)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offsets not committed (%s); the batch is redelivered", exc)


class _Presence:
    def __init__(self, ports: StreamPorts, member: str) -> None:
        self.ports, self.member = ports, member
        self.partitions: list[int] = []

    async def now(self, partitions: list[int]) -> None:
        self.partitions = partitions
        try:
            await presence.announce(self.ports.redis, self.member, partitions)
        except Exception:  # noqa: BLE001 - readiness is advice; Redis may be away
            log.warning("could not announce this consumer's partitions", exc_info=True)

    async def keep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(presence.RENEW_S)
            await self.now(self.partitions)


async def consume(settings: Settings, stop: asyncio.Event) -> None:
    """Join the group and process batches until `stop` is set; the current batch finishes
    (and commits) first, so a graceful stop redelivers nothing."""
    metrics = ConsumerMetrics()
    async with StreamPorts.open(settings) as ports, consumer_telemetry(
            settings, metrics, ports.redis):
        member = settings.consumer_instance_id or uuid.uuid4().hex[:12]
        announce = _Presence(ports, member)
        # Watching the first-seen set must not wait for the group join: a lost set is rebuilt
        # while the consumer is still joining.
        side = [asyncio.create_task(_watch_hot_set(ports, stop)),
                asyncio.create_task(announce.keep(stop)),
                asyncio.create_task(PartitionKeeper(
                    settings, metrics.partition_months_ahead).run(stop))]
        consumer = build_consumer(settings)
        offsets = _Offsets(consumer, announce, finished=ports.flag_marks.done,
                           interval_s=settings.consumer_commit_interval_ms / 1000)
        consumer.subscribe([settings.topic_settlements], listener=offsets)
        try:
            if await _started(consumer, stop):
                await _loop(consumer, offsets, ports, metrics, stop)
        finally:
            for task in side:
                task.cancel()
            await consumer.stop()
            await _withdraw(ports, member)


async def _started(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """Start (join the group) unless `stop` comes first: start() waits for the group's
    assignment, seconds or more while the group rebalances, and a consumer told to stop then
    stops at once rather than after joining (leaving the group it half joined)."""
    starting = asyncio.ensure_future(consumer.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("stopped while joining the consumer group")
        return False
    starting.result()  # start()'s own error, if it failed
    return True


async def _withdraw(ports: StreamPorts, member: str) -> None:
    try:
        await presence.withdraw(ports.redis, member)
    except Exception:  # noqa: BLE001 - its key expires by itself
        log.info("could not withdraw this consumer's presence", exc_info=True)


@dataclass
class _Finishing:
    """A batch being written (`finish`) while the next one is fetched and decided."""

    task: asyncio.Task[BatchReport | None]
    fetched: Fetched
    started: float
    ahead: Ahead


async def _loop(
    consumer: AIOKafkaConsumer, offsets: _Offsets, ports: StreamPorts,
    metrics: ConsumerMetrics, stop: asyncio.Event,
) -> None:
    """Two batches in flight at most: one finishing, the next decided on what it decided.
    Offsets are stored in order, each batch's once it is finished, and committed at
    checkpoints: a poll that finds nothing (the consumer has caught up) and the end are."""
    heartbeat = Heartbeat(ports.settings.consumer_heartbeat_file)  # the healthcheck's file
    finishing: _Finishing | None = None
    while not stop.is_set():
        heartbeat.beat()
        fetched = await _fetch(consumer, ports.settings)
        if not fetched:
            await _settle(finishing, consumer, offsets, metrics)
            await offsets.commit()
            finishing = None
            continue
        finishing = await _next(finishing, fetched, consumer, offsets, ports, metrics, stop)
        await sample_lag(metrics, consumer)
    await _settle(finishing, consumer, offsets, metrics)
    await offsets.commit()


async def _fetch(consumer: AIOKafkaConsumer, settings: Settings) -> Fetched:
    fetched = await consumer.getmany(timeout_ms=settings.consumer_fetch_max_wait_ms,
                                     max_records=settings.consumer_max_batch)
    return {tp: batch for tp, batch in fetched.items() if batch}


async def _next(
    finishing: _Finishing | None, fetched: Fetched, consumer: AIOKafkaConsumer,
    offsets: _Offsets, ports: StreamPorts, metrics: ConsumerMetrics, stop: asyncio.Event,
) -> _Finishing | None:
    """Decide the fetched batch (ahead, if the one before is still finishing), settle the one
    before, and start finishing this one. None if it was given up."""
    records = [incoming(r) for batch in fetched.values() for r in batch]
    still_ours = partial(_holds, consumer, set(fetched))
    started = time.perf_counter()
    prepared = await _decide_ahead(finishing, records, ports)
    if finishing is not None:
        before = await _settle(finishing, consumer, offsets, metrics)
        if before is None:  # given up: its offsets stay, so this batch's must too
            return None
        if not before.as_decided:
            prepared = None
    if prepared is None:
        prepared = await _until_done(lambda: prepare(records, ports), len(records), ports,
                                     stop, still_ours)
        if prepared is None:
            return None
    task = asyncio.create_task(_finish_until_done(ports, prepared, stop, still_ours))
    return _Finishing(task, fetched, started, prepared.ahead)


async def _decide_ahead(
    finishing: _Finishing | None, records: list[Incoming], ports: StreamPorts
) -> Prepared | None:
    """The batch decided on the finishing one's decisions; None if there is none, or it
    failed (then it is decided once that one is finished, with the retries)."""
    if finishing is None:
        return None
    try:
        return await prepare(records, ports, finishing.ahead)
    except Exception:  # noqa: BLE001 - it is decided again, with the retries, after
        log.info("batch of %d not decided ahead; deciding it in turn", len(records),
                 exc_info=True)
        return None


async def _settle(
    finishing: _Finishing | None, consumer: AIOKafkaConsumer, offsets: _Offsets,
    metrics: ConsumerMetrics,
) -> BatchReport | None:
    """Wait for the finishing batch, store its offsets and commit if a checkpoint is due; its
    report, None if it was given up (or there was none)."""
    if finishing is None:
        return None
    report = await finishing.task
    if report is not None:
        offsets.store(_next_offsets(finishing.fetched, consumer.assignment()))
        await offsets.checkpoint()
        observe_batch(metrics, time.perf_counter() - finishing.started, report)
    return report


def _holds(consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> bool:
    return bool(partitions <= consumer.assignment())


def incoming(record: ConsumerRecord[bytes, bytes]) -> Incoming:
    return Incoming(record.topic, record.partition, record.offset, record.timestamp,
                    record.key, record.value or b"")


def _next_offsets(fetched: Fetched, assigned: set[TopicPartition]) -> Offsets:
    """Where each partition resumes, for the partitions this consumer still holds (a
    rebalance may have handed others away while the batch ran)."""
    return {tp: batch[-1].offset + 1 for tp, batch in fetched.items()
            if batch and tp in assigned}


async def _watch_hot_set(ports: StreamPorts, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _ensure_quietly(ports)
        await asyncio.sleep(1.0)


async def _ensure_quietly(ports: StreamPorts) -> bool:
    """True if this process rebuilt the set. A rebuild that fails (Redis refusing writes or
    just restarted, PostgreSQL down) is logged, never raised: the caller tries again later,
    and the consumer must outlive every outage."""
    try:
        return await ports.ensure_hot_set()
    except Exception:  # noqa: BLE001 - Redis or PostgreSQL down: the next round tries again
        log.warning("could not check or rebuild the first-seen set", exc_info=True)
        return False


async def process_until_done(
    ports: StreamPorts, records: list[Incoming], stop: asyncio.Event,
    still_ours: Callable[[], bool] = lambda: True,
) -> BatchReport | None:
    """The batch's report once it is done, the whole unit of work retried until then (see
    `_until_done`)."""
    return await _until_done(lambda: process(records, ports), len(records), ports, stop,
                             still_ours)


async def _finish_until_done(
    ports: StreamPorts, prepared: Prepared, stop: asyncio.Event, still_ours: Callable[[], bool],
) -> BatchReport | None:
    """`finish`, or if it fails, the whole batch again (what it wrote is in the record and
    is healed, not written twice); then it is not as decided, for the batch decided ahead."""
    try:
        return await finish(prepared, ports)
    except Exception:  # noqa: BLE001 - the consumer must outlive any one failure
        # worded as `_until_done` words its retries: one phrase for operators to search
        log.exception("batch of %d failed; retrying it whole", len(prepared.records))
    report = await process_until_done(ports, list(prepared.records), stop, still_ours)
    return None if report is None else replace(report, as_decided=False)


async def _until_done(
    attempt: Callable[[], Awaitable[T]], size: int, ports: StreamPorts, stop: asyncio.Event,
    still_ours: Callable[[], bool],
) -> T | None:
    """`attempt`'s result once it succeeds. A batch that fails (a deadlock with another
    consumer, a server restarting) is retried whole: what it wrote is in the record and is
    not written twice. Nothing a client sends gets here (bad events are dead-lettered), so
    retrying is never a poison loop on input; it waits out outages. None when it must be
    given up: the process is stopping, or a rebalance took its partitions (their new owner
    redelivers it)."""
    delay = 0.05
    while True:
        try:
            return await attempt()
        except HotSetRebuilding:
            log.warning("first-seen set missing; rebuilding it (or waiting for whoever is)")
            if not await _ensure_quietly(ports):
                await asyncio.sleep(0.5)  # rebuilt elsewhere, or Redis refuses: wait
        except Exception:  # noqa: BLE001 - the consumer must outlive any one failure
            log.exception("batch of %d failed; retrying in %.2f s", size, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        if stop.is_set() or not still_ours():
            log.warning("batch of %d given up (%s); it is redelivered", size,
                        "stopping" if stop.is_set() else "partitions revoked")
            return None
