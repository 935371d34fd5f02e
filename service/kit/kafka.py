"""Kafka client construction. The idempotent producer is off on purpose: the dev broker (Tansu)
does not support it, and every consumer is idempotent by design instead."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer


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
