"""`tracegate loadtest stream`: settlement events through real `tracegate consume` processes.

Throughput is trace codes / (first produce -> every partition's committed offset at its end).
The consumers commit only after the batch is durable in PostgreSQL and its flags are
acknowledged by Kafka, so "committed" means all three. Flag latency is produce -> the flag read
back from the flags topic by this process. The result is checked against the workload's ground
truth: a fast wrong answer is `correct: false`."""

from __future__ import annotations

import asyncio
import pickle
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cli.devstack.process import ChildProcess
from loadtest.cpu import meter_for, per_unit_us
from loadtest.producer import Row
from loadtest.stack import Stack, create_topics, reset_record
from loadtest.stats import summary_ms
from loadtest.topics import end_offsets
from loadtest.truth import FlagKey
from loadtest.workload import Workload
from service.kit import event_loop
from service.kit.redis_client import build_redis

_DEADLINE_S = 600.0
_POLL_S = 0.05
CONSUME = ("-m", "cli.main", "consume")  # the consumer process; baseline (d) runs its own


@dataclass
class FlagReader:
    """Reads the flags topic from the start, noting when each flag arrived, fetching as a
    real flag consumer would (a 100 ms fetch wait, fetch_min_bytes at its default of 1), so
    the harness asks the broker no harder than one: ~10 fetches a second (with a 5 ms wait
    it was ~200, 8 % of a core of Tansu's CPU on an idle topic; now ~1 %). Apache Kafka
    answers a waiting fetch as soon as a flag arrives; Tansu 0.6.0 holds every fetch for up
    to its wait, so there the arrival time, and the flag latency measured from it, is late by
    up to that wait: measured, 25 ms at p50 and 51 ms at p99 (max 52) over 167 flags."""

    bootstrap: str
    topic: str
    flags: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    position: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        partition = TopicPartition(self.topic, 0)
        consumer.assign([partition])
        try:
            while not stop.is_set():
                batch = await consumer.getmany(partition, timeout_ms=250)
                now = time.time()
                for record in batch.get(partition, []):
                    self.flags.append((now, orjson.loads(record.value or b"{}")))
                self.position = await consumer.position(partition)
        finally:
            await consumer.stop()


@dataclass
class StreamRun:
    consumers: int
    rate: float
    codes: int
    seconds: float
    produce_seconds: float
    latencies: list[float]
    correct: bool
    checks: dict[str, Any]
    cpu_s: dict[str, float] = field(default_factory=dict)  # by role, over the measured window

    @property
    def codes_per_s(self) -> float:
        return self.codes / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "consumers": self.consumers, "produce_rate_codes_per_s": self.rate or "max",
            "codes": self.codes, "seconds": round(self.seconds, 3),
            "codes_per_s": round(self.codes_per_s), "produce_seconds": round(
                self.produce_seconds, 3), "flag_latency_ms": summary_ms(self.latencies),
            "correct": self.correct, "cpu_us_per_code": per_unit_us(self.cpu_s, self.codes),
            "checks": self.checks,
        }


def run_stream(
    stack: Stack, workload: Workload, consumers: int, rate: float, run: str,
    profile_to: Path | None = None, command: Sequence[str] = CONSUME,
) -> StreamRun:
    return event_loop.run(_run(stack, workload, consumers, rate, run, profile_to, command))


async def _run(
    stack: Stack, workload: Workload, consumers: int, rate: float, run: str,
    profile_to: Path | None, command: Sequence[str],
) -> StreamRun:
    await _reset(stack, run, workload.partitions)
    env = stack.env(run, TRACEGATE_SETTLEMENTS_PARTITIONS=str(workload.partitions))
    children = [stack.spawn(f"{run}-consumer-{n}", command, env) for n in range(consumers)]
    await _warm_up(stack, workload, env)
    reader = FlagReader(stack.kafka_bootstrap, env["TRACEGATE_TOPIC_FLAGS"])
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    profiler = _profile(stack, children[0].pid, profile_to, run)
    # Encoded before the window: the harness's share of the CPU is what it takes from the run.
    events = write_events(stack, [event.row() for event in workload.events], run)
    # Consumers and servers; the producer reports its own (it exits inside the window).
    meter, harness = meter_for(stack.servers, consumers=children), time.process_time()
    meter.begin()
    try:
        produced, finished = await _produce_and_drain(stack, workload, env, rate, events)
    finally:
        if profiler is not None:
            profiler.stop()
    cpu = {**meter.seconds(), "producer": produced["cpu_s"],
           "harness": time.process_time() - harness}
    await _catch_up(reader, stack.kafka_bootstrap, env["TRACEGATE_TOPIC_FLAGS"])
    stop.set()
    await reading
    stack.stop_children()
    checks, correct = await _check(stack, workload, reader)
    return StreamRun(consumers, rate, workload.codes, finished - produced["start"],
                     produced["end"] - produced["start"], _latencies(workload, produced, reader),
                     correct, checks, cpu)


async def _reset(stack: Stack, run: str, partitions: int) -> None:
    await reset_record(stack.dsn)
    client = build_redis(stack.redis_url, cluster=stack.redis_cluster)  # issue 19
    await client.flushall()
    await client.aclose()
    await create_topics(stack, run, partitions)


async def _warm_up(stack: Stack, workload: Workload, env: dict[str, str]) -> None:
    """One code-free settlement per partition, committed: the group is joined and every
    consumer has connected to PostgreSQL, Redis and Kafka before the clock starts."""
    institution = workload.institutions[0].institution_id
    rows: list[Row] = []
    for partition in range(workload.partitions):
        body = {"type": "settlement", "source": "stream", "settlement_id": f"WARM-{partition}",
                "institution_id": institution, "settled_at": "2025-03-01T10:00:00+08:00",
                "lines": [{"line_no": 1, "drug_code": "T0", "quantity": 1, "split": False,
                           "trace_codes": [], "no_code_reason": "herbal_pieces"}]}
        rows.append((partition, f"WARM-{partition}".encode(), orjson.dumps(body), 0))
    await produce_in_child(stack, write_events(stack, rows, "warmup"), env, 0.0)
    await _wait_committed(stack.kafka_bootstrap, env, dict.fromkeys(range(workload.partitions), 1))


async def _produce_and_drain(
    stack: Stack, workload: Workload, env: dict[str, str], rate: float, events: Path
) -> tuple[dict[str, Any], float]:
    ends = Counter(e.partition for e in workload.events)
    target = {p: ends[p] + 1 for p in range(workload.partitions)}  # +1: the warm-up event
    producing = asyncio.create_task(produce_in_child(stack, events, env, rate))
    finished = await _wait_committed(stack.kafka_bootstrap, env, target)
    return await producing, finished


def write_events(stack: Stack, rows: list[Row], name: str) -> Path:
    """The producer's input: (partition, key, value, codes) per event, pickled."""
    events = stack.tmp / f"{name}.events"
    events.write_bytes(pickle.dumps(rows))
    return events


async def produce_in_child(
    stack: Stack, events: Path, env: dict[str, str], rate: float
) -> dict[str, Any]:
    name = events.stem
    out = stack.tmp / f"{name}.produced.json"
    child = stack.spawn(f"{name}-producer", [
        "-m", "loadtest.producer", "--events", str(events), "--bootstrap",
        stack.kafka_bootstrap, "--topic", env["TRACEGATE_TOPIC_SETTLEMENTS"],
        "--rate", str(rate), "--out", str(out)], {})
    while child.alive():  # noqa: ASYNC110 - a child process, not an asyncio event
        await asyncio.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"producer failed: {child.log_tail()}")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    return result


async def _wait_committed(bootstrap: str, env: dict[str, str], target: dict[int, int]) -> float:
    """Polls the group's committed offsets (OffsetFetch through a consumer that never joins
    the group), every _POLL_S, one request for the partitions not yet done (aiokafka's
    `committed` asks one partition a request; its coordinator's call takes them all): the
    watcher shares the cores with what it measures, and at ~20 requests a second it asks the
    broker about as often as a consumer's fetch loop does (one request a partition cost
    Tansu 1.7 % of a core on an idle group; this 0.7 %). The end is seen at most _POLL_S
    late, which only lowers the figure."""
    topic, group = env["TRACEGATE_TOPIC_SETTLEMENTS"], env["TRACEGATE_CONSUMER_GROUP"]
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                               enable_auto_commit=False)
    await watcher.start()
    deadline = time.monotonic() + _DEADLINE_S
    pending = dict(target)
    try:
        while time.monotonic() < deadline:
            committed = await watcher._coordinator.fetch_committed_offsets(
                [TopicPartition(topic, p) for p in pending])
            pending = {p: end for p, end in pending.items()  # committed offsets only grow
                       if _offset(committed.get(TopicPartition(topic, p))) < end}
            if not pending:
                return time.time()
            await asyncio.sleep(_POLL_S)
    finally:
        await watcher.stop()
    raise TimeoutError(f"offsets of {group} not committed within {_DEADLINE_S:.0f}s")


def _offset(committed: Any) -> int:
    return -1 if committed is None else int(committed.offset)


async def _catch_up(reader: FlagReader, bootstrap: str, topic: str) -> None:
    partition = TopicPartition(topic, 0)
    end = (await end_offsets(bootstrap, [partition]))[partition]  # Tansu: see topics.py
    deadline = time.monotonic() + 30
    while reader.position < end and time.monotonic() < deadline:  # noqa: ASYNC110 - polled
        await asyncio.sleep(0.02)


def _latencies(workload: Workload, produced: dict[str, Any], reader: FlagReader) -> list[float]:
    sent_at: dict[str, float] = {}
    for event, at in zip(workload.events, produced["sent"], strict=True):
        sent_at.setdefault(event.key, at)
    return [at - sent_at[flag["settlement_id"]] for at, flag in reader.flags
            if flag.get("settlement_id") in sent_at]


async def _check(
    stack: Stack, workload: Workload, reader: FlagReader
) -> tuple[dict[str, Any], bool]:
    keys: list[FlagKey] = [(f["kind"], f["settlement_id"], f["line_no"], f.get("trace_code"))
                           for _, f in reader.flags]
    got = set(keys)
    expected = workload.truth.flags
    record = await _record_counts(stack.dsn)
    checks = {
        "expected": workload.truth.to_json(), "record": record,
        "flags_on_topic": len(keys), "flags_distinct": len(got),
        "missing_flags": len(expected - got), "unexpected_flags": len(got - expected),
        "examples_missing": [list(k) for k in sorted(expected - got, key=str)[:5]],
        "examples_unexpected": [list(k) for k in sorted(got - expected, key=str)[:5]],
    }
    correct = (got == expected and len(keys) == len(got) and record["flags"] == len(expected)
               and record["claims"] == workload.truth.claims)
    return checks, correct


async def _record_counts(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        flags = await connection.fetchval("SELECT count(*) FROM flags")
        claims = await connection.fetchval("SELECT count(*) FROM code_claims")
        settlements = await connection.fetchval(
            "SELECT count(*) FROM settlements WHERE settlement_id NOT LIKE 'WARM-%'")
    finally:
        await connection.close()
    return {"flags": int(flags), "claims": int(claims), "settlements": int(settlements)}


def _profile(stack: Stack, pid: int, out: Path | None, run: str) -> ChildProcess | None:
    """py-spy samples the first consumer for the whole run; SIGINT makes it write the file."""
    if out is None:
        return None
    py_spy = Path(sys.executable).with_name("py-spy")
    return stack.spawn(f"{run}-py-spy", [str(py_spy), "record", "-p", str(pid), "-r", "250",
                                         "--format", "raw", "-o", str(out), "--nonblocking"],
                       {}, python=False, stop_signal=signal.SIGINT)
