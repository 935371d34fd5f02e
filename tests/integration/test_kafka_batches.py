"""KeyedBatches (service/kit/kafka.py): a key goes to the partition aiokafka's own send() gives
it, so the events of one settlement stay in one partition whoever produced them."""

from __future__ import annotations

import secrets

from cli.devstack.servers import ensure_topics
from service.kit.kafka import KeyedBatches, build_producer
from service.settings import Settings


async def test_a_key_keeps_the_partition_send_gives_it(settings: Settings) -> None:
    topic = f"t.{secrets.token_hex(3)}.keyed"
    await ensure_topics(settings.kafka_bootstrap, {topic: 6})
    producer = build_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        keys = [f"3505A:P11010500001:R{n}".encode() for n in range(60)]
        by_send = {key: (await producer.send_and_wait(topic, b"{}", key=key)).partition
                   for key in keys}
        batches = await KeyedBatches.open(producer, topic)
        by_batch = {}
        for key in keys:  # one key a call: each batch's metadata names its partition
            [future] = await batches.send([(key, b"{}")])
            by_batch[key] = (await future).partition
        assert len(set(by_send.values())) > 1  # the keys do spread
        assert by_batch == by_send
        pinned = await KeyedBatches.open(producer, topic, partition=4)
        assert {(await f).partition for f in await pinned.send([(k, b"{}") for k in keys])} == {4}
    finally:
        await producer.stop()
