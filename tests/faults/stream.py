"""The Kafka side of a fault run: feeding the workload in acknowledged chunks (resending a chunk
the broker did not acknowledge: at-least-once, as any producer), reading a topic to its end,
and how far the consumer group is behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from loadtest.topics import end_offsets
from tests.faults.workload import StreamEvent


@dataclass
class FeedProgress:
    chunks_total: int
    chunks_acked: int = 0
    resends: int = 0  # chunks sent again because the broker did not acknowledge them

    @property
    def done(self) -> bool:
        return self.chunks_acked == self.chunks_total


async def feed(
    bootstrap: str, topic: str, chunks: Sequence[Sequence[StreamEvent]], progress: FeedProgress,
    *, codes_per_s: float | None = None,
    before_chunk: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Produce every chunk, each acknowledged before the next is sent; at `codes_per_s` if
    given (a live stream the faults land in), else as fast as the broker takes it.
    `before_chunk(fraction fed so far)` may hold the feed back."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                acks="all", linger_ms=5, request_timeout_ms=3000)
    await producer.start()
    try:
        begin, codes = time.monotonic(), 0
        for chunk in chunks:
            if before_chunk is not None:
                await before_chunk(progress.chunks_acked / progress.chunks_total)
            await _until_acknowledged(producer, topic, chunk, progress)
            progress.chunks_acked += 1
            codes += sum(event.codes for event in chunk)
            if codes_per_s:
                await asyncio.sleep(max(0.0, begin + codes / codes_per_s - time.monotonic()))
    finally:
        await producer.stop()


async def _until_acknowledged(
    producer: AIOKafkaProducer, topic: str, chunk: Sequence[StreamEvent], progress: FeedProgress
) -> None:
    while True:
        sends, refused = [], False
        try:
            for event in chunk:
                sends.append(await producer.send(topic, event.value, key=event.key,
                                                 partition=event.partition))
        except KafkaError:
            refused = True
        results = await asyncio.gather(*sends, return_exceptions=True)
        if not refused and not any(isinstance(result, BaseException) for result in results):
            return
        progress.resends += 1
        await asyncio.sleep(0.2)


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Every record on `topic` (nothing may be producing to it any more)."""
    ends = await last_offsets(bootstrap, topic)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False)
    await reader.start()
    try:
        partitions = list(ends)
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any([await reader.position(tp) < ends[tp] for tp in partitions]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: could not read to the end in {timeout_s:.0f}s")
            batch = await reader.getmany(*partitions, timeout_ms=500)
            records += [record for part in batch.values() for record in part]
        return records
    finally:
        await reader.stop()


async def last_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Per partition, the offset after its last record, on Tansu too (loadtest/topics.py)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False)
    await reader.start()
    try:
        partitions = await _partitions(reader, topic)
    finally:
        await reader.stop()
    return await end_offsets(bootstrap, partitions)


async def _partitions(reader: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await reader.topics()  # fetches metadata, so the topic's partitions are known
    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]


async def wait_group_caught_up(
    bootstrap: str, topic: str, group: str, timeout_s: float, meanwhile: Callable[[], None]
) -> int:
    """Once nothing more is produced: 0 as soon as the consumer group committed past every
    event of `topic`, else how many events it is still behind after `timeout_s`; calls
    `meanwhile` between polls. Asks the coordinator for committed offsets without joining
    the group (no rebalance)."""
    ends = await last_offsets(bootstrap, topic)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            behind = 0
            for tp, end in ends.items():
                behind += max(0, end - (await reader.committed(tp) or 0))
            if not behind or time.monotonic() > deadline:
                return behind
            meanwhile()
            await asyncio.sleep(0.25)
    finally:
        await reader.stop()
