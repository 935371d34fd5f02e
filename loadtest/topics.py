"""A topic's end as the benchmarks need it, on Tansu too.

Tansu 0.6.0 answers ListOffsets (latest) with the newest batch's base offset + 1, not the
high watermark (tansu-storage dynostore.rs `list_offsets` takes the first offset of the newest
batch object): a partition whose last batch held 100 records looks 99 short of its end, so a
reader waiting for `end_offsets` could stop before that batch. A fetch's high watermark is
right (the broker's watermark), so the end is read as the high watermark of a fetch made from
the listed offset on; on Apache Kafka both agree."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

_WAIT_S = 10.0


async def end_offsets(bootstrap: str, partitions: list[TopicPartition]
                      ) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=100)
    await consumer.start()
    try:
        listed = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, max(listed[partition] - 1, 0))
        return await _high_watermarks(consumer, partitions, listed)
    finally:
        await consumer.stop()


async def _high_watermarks(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                           listed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    deadline = time.monotonic() + _WAIT_S
    ends: dict[TopicPartition, int] = {}
    while len(ends) < len(partitions) and time.monotonic() < deadline:
        await consumer.getmany(*partitions, timeout_ms=200)
        ends.update({p: high for p in partitions
                     if (high := consumer.highwater(p)) is not None})
        await asyncio.sleep(0)
    return {p: max(ends.get(p, 0), listed[p]) for p in partitions}
