"""Baselines (c) and its changelog row: the workload's events on a fresh topic, then the Quix
Streams app (loadtest/baselines/quix.py) in its own process until it has decided every code;
its flags read back and scored against the ground truth's code re-use."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from loadtest.baselines.quix import flags_topic
from loadtest.stack import Stack, create_topics
from loadtest.stream import produce_in_child, write_events
from loadtest.topics import end_offsets
from loadtest.truth import REUSE_ONLY, SoldCode, reuse_flags, score
from loadtest.workload import Workload

_TIMEOUT_S = 300.0


def run_quix(stack: Stack, workload: Workload, changelog: bool = False) -> dict[str, Any]:
    name = "quixcl" if changelog else "quix"
    env = stack.env(name)
    topic = env["TRACEGATE_TOPIC_SETTLEMENTS"]
    asyncio.run(create_topics(stack, name, workload.partitions))
    events = write_events(stack, [event.row() for event in workload.events], name)
    asyncio.run(produce_in_child(stack, events, env, 0.0))
    out = stack.tmp / f"{name}.json"
    kafka = next(server for server in stack.servers if server.name == "kafka")
    child = stack.spawn(name, [
        "-m", "loadtest.baselines.quix", "--bootstrap", stack.kafka_bootstrap, "--topic", topic,
        "--codes", str(workload.codes), "--out", str(out), "--broker-pid", str(kafka.pids[0]),
        *(["--changelog"] if changelog else [])], {})
    deadline = time.monotonic() + _TIMEOUT_S
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    child.stop()
    if not out.is_file():
        return {"codes_per_s": None, "error": f"Quix Streams did not finish: {child.log_tail(8)}"}
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    found = asyncio.run(_flags(stack.kafka_bootstrap, flags_topic(topic)))
    if changelog:  # what the store wrote to its changelog topic (one message a code set)
        result["changelog_messages"] = asyncio.run(
            _messages(stack.kafka_bootstrap, f"changelog__quix-{topic}"))
    result["flags"] = score(found, reuse_flags(workload.truth.flags), REUSE_ONLY)
    result["correct"] = result["flags"]["exact"]
    result["note"] = ("Tansu omits retention.ms in DescribeConfigs; the app fills in Kafka's "
                      "default so Quix Streams can create its repartition (and changelog) topic")
    return result


async def _flags(bootstrap: str, topic: str) -> list[SoldCode]:
    """Every flag on the app's output topic, repeats included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await end_offsets(bootstrap, [partition]))[partition]
        found: list[SoldCode] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                sale = orjson.loads(record.value or b"{}")
                found.append((sale["settlement_id"], sale["line_no"], sale["trace_code"]))
        return found
    finally:
        await consumer.stop()


async def _messages(bootstrap: str, prefix: str) -> int:
    """Messages on every topic whose name starts with `prefix` (their end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for name in await consumer.topics()
                      if name.startswith(prefix)
                      for p in consumer.partitions_for_topic(name) or ()]
    finally:
        await consumer.stop()
    return sum((await end_offsets(bootstrap, partitions)).values()) if partitions else 0
