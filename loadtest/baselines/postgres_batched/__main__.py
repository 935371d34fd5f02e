"""`python -m loadtest.baselines.postgres_batched`: baseline (d) as a consumer process, on the
TRACEGATE_* settings `tracegate consume` reads (servers, topics, group, batch size, fetch
wait), until SIGTERM; the batch in hand finishes and commits first."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from loadtest.baselines.postgres_batched import record
from loadtest.baselines.postgres_batched.consumer import Ports, process
from service.kit import event_loop
from service.kit.garbage_collection import BATCH_YOUNG_THRESHOLD, tune_for_throughput
from service.kit.kafka import build_producer
from service.policy.schemas import PolicyConfig
from service.settings import Settings

log = logging.getLogger("baseline.postgres_batched")
Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    event_loop.run(_run(Settings()))
    return 0


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    connection = await record.open_connection(settings.asyncpg_dsn)
    producer = build_producer(settings.kafka_bootstrap)
    consumer = _consumer(settings)
    await producer.start()
    try:
        await consumer.start()
        tune_for_throughput(BATCH_YOUNG_THRESHOLD)  # as tracegate's consumer does, once started
        await _loop(consumer, Ports(settings, connection, producer,
                                    PolicyConfig.from_settings(settings)), stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await connection.close()


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    """Fetched as tracegate's consumers fetch: the same batch bound, sizes and wait."""
    return AIOKafkaConsumer(
        settings.topic_settlements, bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=settings.consumer_max_batch,
        fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=min(1000, settings.consumer_session_timeout_ms // 3))


async def _loop(consumer: AIOKafkaConsumer, ports: Ports, stop: asyncio.Event) -> None:
    settings = ports.settings
    while not stop.is_set():
        fetched: Fetched = await consumer.getmany(
            timeout_ms=settings.consumer_fetch_max_wait_ms, max_records=settings.consumer_max_batch)
        records = [r for batch in fetched.values() for r in batch]
        if records and await _until_done(records, ports, stop):
            await _commit(consumer, fetched)


async def _until_done(records: list[ConsumerRecord[bytes, bytes]], ports: Ports,
                      stop: asyncio.Event) -> bool:
    """A failed batch (a claim race, a server away) rolls back and is tried again whole."""
    delay = 0.05
    while not stop.is_set():
        try:
            await process(records, ports)
            return True
        except Exception:  # noqa: BLE001 - the consumer outlives any one failure
            log.exception("batch of %d failed; retrying in %.2f s", len(records), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return False


async def _commit(consumer: AIOKafkaConsumer, fetched: Fetched) -> None:
    try:
        await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch})
    except (CommitFailedError, KafkaError) as exc:  # a rebalance took them: redelivered
        log.warning("offsets not committed (%s)", exc)


if __name__ == "__main__":
    raise SystemExit(main())
