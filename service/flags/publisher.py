"""Publishing flags to the flags topic (key: the canonical trace code)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from service.flags.schemas import FlagRecord


async def publish_flags(
    producer: AIOKafkaProducer, topic: str, flags: Sequence[FlagRecord]
) -> None:
    """Send every flag, then wait for all acks: one flush per batch, not one per flag."""
    sends = [
        await producer.send(topic, orjson.dumps(flag.to_json()), key=_key(flag))
        for flag in flags
    ]
    await asyncio.gather(*sends)


def _key(flag: FlagRecord) -> bytes:
    # Flags without a code (missing code, mismatch) are keyed by settlement to stay ordered.
    return (flag.trace_code or flag.settlement_id).encode()
