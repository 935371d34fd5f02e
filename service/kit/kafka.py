"""Kafka client construction. The idempotent producer is off on purpose: the dev broker (Tansu)
does not support it, and every consumer is idempotent by design instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner


def build_producer(bootstrap: str, *, linger_ms: int = 0) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        request_timeout_ms=5000,
        max_batch_size=1024 * 1024,
    )


async def kafka_reachable(producer: AIOKafkaProducer, timeout_s: float = 1.0) -> bool:
    """A fresh metadata round trip: cached metadata would hide an outage."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    return True


class PublishFailed(Exception):
    """Kafka did not acknowledge in time (or refused): the caller must undo and say 503."""


async def publish(
    producer: AIOKafkaProducer, topic: str, key: str, value: bytes, timeout_s: float
) -> None:
    """Send and wait for the acknowledgement, at most `timeout_s`."""
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key.encode()), timeout_s)
    except Exception as exc:  # noqa: BLE001 - every failure means "not on its way"
        raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc


class KeyedBatches:
    """Many keyed values onto one topic as record batches: each value goes to the partition
    the default partitioner gives its key (murmur2, as aiokafka's and Java's send() choose),
    so a key keeps the partition every other producer of it uses. One future a batch instead
    of one a value: measured here a fifth of send()'s CPU per value, and three times the rate."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, partitions: list[int],
        partition: int | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._fixed = partition  # every value to this partition instead
        self._partitioner = DefaultPartitioner()

    @classmethod
    async def open(
        cls, producer: AIOKafkaProducer, topic: str, partition: int | None = None
    ) -> KeyedBatches:
        partitions = sorted(await producer.partitions_for(topic))
        return cls(producer, topic, partitions, partition)

    async def send(self, items: Iterable[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        """Queues every (key, value); the futures resolve when Kafka has acknowledged them
        all. Waits only while a partition's previous batch is still being sent."""
        builders: dict[int, Any] = {}
        sent: list[asyncio.Future[Any]] = []
        for key, value in items:
            partition = self._partition_of(key)
            builder = builders.get(partition)
            if builder is None or builder.append(key=key, value=value, timestamp=None) is None:
                if builder is not None:
                    sent.append(await self._send(builder, partition))
                builder = builders[partition] = self._producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
        for partition, builder in builders.items():
            sent.append(await self._send(builder, partition))
        return sent

    def _partition_of(self, key: bytes) -> int:
        if self._fixed is not None:
            return self._fixed
        partition: int = self._partitioner(key, self._partitions, self._partitions)
        return partition

    async def _send(self, builder: Any, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send_batch(
            builder, self._topic, partition=partition)
        return future
