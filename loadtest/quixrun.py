"""Baseline (c) orchestration: the workload's events on a fresh topic, then the Quix Streams
app (loadtest/baselines/quix.py) in its own process until it has decided every code."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from loadtest.stack import Stack, create_topics
from loadtest.stream import produce_in_child, write_events
from loadtest.workload import Workload

_TIMEOUT_S = 300.0


def run_quix(stack: Stack, workload: Workload) -> dict[str, Any]:
    env = stack.env("quix")
    asyncio.run(create_topics(stack, "quix", workload.partitions))
    events = write_events(stack, [event.row() for event in workload.events], "quix")
    asyncio.run(produce_in_child(stack, events, env, 0.0))
    out = stack.tmp / "quix.json"
    child = stack.spawn("quix", [
        "-m", "loadtest.baselines.quix", "--bootstrap", stack.kafka_bootstrap,
        "--topic", env["TRACEGATE_TOPIC_SETTLEMENTS"], "--codes", str(workload.codes),
        "--out", str(out)], {})
    deadline = time.monotonic() + _TIMEOUT_S
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    child.stop()
    if not out.is_file():
        return {"codes_per_s": None, "error": f"Quix Streams did not finish: {child.log_tail(8)}"}
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["note"] = ("Tansu omits retention.ms in DescribeConfigs; the app fills in Kafka's "
                      "default so Quix Streams can create its repartition topic")
    return result
