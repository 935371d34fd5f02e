"""`tracegate consume`: one process of the settlements consumer group.

Offset discipline (as in Quix Streams): auto-commit is off; a batch is processed, its effects
are committed to PostgreSQL, its flags are acknowledged by Kafka, and only then are its offsets
committed. A crash anywhere before that redelivers the batch, which is harmless because every
write is idempotent on its natural key."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from consumers.batch import BatchProcessor
from service.firstseen.store import HotSetRebuilding
from service.kit import event_loop
from service.kit.garbage_collection import tune_for_throughput
from service.kit.heartbeat import Heartbeat
from service.records.partitions import PartitionKeeper
from service.settings import Settings

log = logging.getLogger(__name__)


def run_consumer(settings: Settings) -> int:
    tune_for_throughput()
    event_loop.run(_consume_until_stopped(settings))
    return 0


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topic_settlements,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.consumer_max_batch,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
    )


async def _consume_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await consume(settings, stop)


async def consume(settings: Settings, stop: asyncio.Event) -> None:
    """Join the group and process batches until `stop` is set; the current batch finishes
    (and commits) first, so a graceful stop redelivers nothing."""
    async with BatchProcessor.open(settings) as processor:
        # Watching the first-seen set must not wait for the group join (seconds, more after a
        # crash): a lost set is rebuilt while the consumer is still joining.
        watcher = asyncio.create_task(_watch_hot_set(processor, stop))
        keeper = asyncio.create_task(PartitionKeeper(settings).run(stop))  # issue 19
        consumer = build_consumer(settings)
        try:
            await consumer.start()
            log.info("joined group %s on %s", settings.consumer_group,
                     settings.topic_settlements)
            await _loop(consumer, processor, settings, stop)
        finally:
            watcher.cancel()
            keeper.cancel()
            await consumer.stop()
            log.info("left group %s", settings.consumer_group)


async def _watch_hot_set(processor: BatchProcessor, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _ensure_quietly(processor)
        await asyncio.sleep(1.0)


async def _loop(
    consumer: AIOKafkaConsumer, processor: BatchProcessor, settings: Settings,
    stop: asyncio.Event,
) -> None:
    heartbeat = Heartbeat(settings.consumer_heartbeat_file)  # issue 19: the healthcheck
    while not stop.is_set():
        heartbeat.beat()
        records = await _next_batch(consumer, settings)
        if not records:
            continue
        await process_until_done(processor, records, stop)
        # Only after the batch is durable in PostgreSQL and its flags acknowledged.
        await consumer.commit()


async def _next_batch(
    consumer: AIOKafkaConsumer, settings: Settings
) -> list[ConsumerRecord[bytes, bytes]]:
    """Gather fetches for up to `consumer_batch_timeout_ms` or `consumer_max_batch` records:
    a broker may answer each fetch with a few records, and the per-batch costs (two Redis
    round trips, one transaction, one flush) are what large batches spread out."""
    deadline = time.monotonic() + settings.consumer_batch_timeout_ms / 1000
    records: list[ConsumerRecord[bytes, bytes]] = []
    while len(records) < settings.consumer_max_batch:
        wait_ms = int((deadline - time.monotonic()) * 1000)
        if wait_ms <= 0 and records:
            break
        fetched = await consumer.getmany(
            timeout_ms=max(wait_ms, 1), max_records=settings.consumer_max_batch - len(records)
        )
        records += [record for partition in fetched.values() for record in partition]
        if wait_ms <= 0:
            break
    return records


async def _ensure_quietly(processor: BatchProcessor) -> bool:
    """True if this process rebuilt the set. A rebuild that fails (Redis refusing writes or
    just restarted, PostgreSQL down) is logged, never raised: the caller tries again later,
    and the consumer must outlive every outage."""
    try:
        return await processor.ensure_hot_set()
    except Exception:  # noqa: BLE001 - Redis or PostgreSQL down: the next round tries again
        log.warning("could not check or rebuild the first-seen set", exc_info=True)
        return False


async def process_until_done(
    processor: BatchProcessor, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
) -> None:
    """A batch that fails (deadlock with another consumer, a server restarting) is retried
    whole: every effect is idempotent, and claims already made are this batch's own lines,
    which the retry sees as replays. Nothing a client sends gets here (bad events are
    dead-lettered), so retrying is never a poison loop on input; it waits out outages."""
    delay = 0.05
    while True:
        try:
            await processor.process(records)
            return
        except HotSetRebuilding:
            if stop.is_set():  # stopping: the batch is redelivered, not waited out
                raise
            log.warning("first-seen set missing; rebuilding it (or waiting for whoever is)")
            if not await _ensure_quietly(processor):
                await asyncio.sleep(0.5)  # rebuilt elsewhere, or Redis refuses: wait, don't spin
        except Exception:  # noqa: BLE001 - the consumer must outlive any one failure
            if stop.is_set():
                raise
            log.exception("batch of %d failed; retrying in %.2f s", len(records), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
