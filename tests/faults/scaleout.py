"""Issue 19: the stream scaled out — two consumer processes on six partitions, on whatever Redis
the suite runs on (a Redis Cluster under TRACEGATE_TEST_REDIS_CLUSTER) — while one consumer is
killed with SIGKILL mid-stream and restarted, a third joins mid-stream (a rebalance), and one
Redis node loses its data (FLUSHALL of one primary; of the only server on a single Redis). The
gate answers 503 for codes of the lost node until the set is rebuilt and claims nothing; the
record equals the ground truth: nothing lost, doubled or falsely flagged."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.firstseen.encoding import Layout
from service.firstseen.rebuild import LOCK_KEY
from service.settings import Settings
from tests.faults.processes import ConsumerProcess, OwnServers
from tests.faults.redis_loss import TEST_LOCK, _Scenario
from tests.faults.scale import Scale
from tests.faults.scenario import (
    ScenarioReport,
    StreamRun,
    gated_stream,
    isolated,
    wait_for_batch_writing,
)
from tests.harness import redis_client


async def scale_out(base: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    settings = isolated(base, "scaleout")
    report = ScenarioReport("scale-out", scale.name)
    async with gated_stream(settings, workdir, report, scale.scaleout_codes) as (
            stream, gate, run):
        scenario = _Scenario(stream, gate, OwnServers(workdir), scale, run)
        extra = [ConsumerProcess(f"consumer-{n}", settings,
                                 workdir / f"scaleout-{run}-consumer-{n}.log") for n in (2, 3)]
        try:
            extra[0].start()
            stream.start(codes_per_s=scale.feed_rate)
            await _faults(stream, scenario, extra, settings)
            await stream.drain()
            await stream.close(others=extra)
        finally:
            for consumer in extra:
                await asyncio.to_thread(consumer.stop)
    return report


async def _faults(stream: StreamRun, scenario: _Scenario, extra: list[ConsumerProcess],
                  settings: Settings) -> None:
    report = stream.report
    if not await stream.reach(0.2, at_least=1):
        return
    moment = ("while a batch was being written" if await wait_for_batch_writing(
        settings.asyncpg_dsn, timeout_s=30.0) else "no batch seen being written")
    extra[0].kill()
    report.fault(f"SIGKILL {extra[0].name} at {stream.recorded.last} of {stream.settlements} "
                 f"settlements recorded, {moment}; restarted")
    extra[0].start()
    if not await stream.reach(0.35, at_least=stream.recorded.last + 1):
        return
    extra[1].start()
    joined = await _joined(extra[1], JOIN_TIMEOUT_S)
    report.check("consumer_joins", joined,
                 f"{extra[1].name} had not joined the group after {JOIN_TIMEOUT_S:.0f}s")
    report.fault(f"{extra[1].name} joined the group at {stream.recorded.last} settlements "
                 "recorded (a rebalance over six partitions)")
    if not await stream.reach(0.6, at_least=stream.recorded.last + 1):
        return
    await _lose_a_node(stream, scenario, settings)


JOIN_TIMEOUT_S = 60.0


async def _joined(consumer: ConsumerProcess, timeout_s: float) -> bool:
    """Until the consumer says it was assigned partitions (consumers/runner.py logs each
    assignment): the fault is a rebalance onto three members, so the run must not go on
    (and end) before the third is one of them."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while "assigned [" not in consumer.log():
        if asyncio.get_running_loop().time() > deadline or not consumer.alive():
            return False
        await asyncio.sleep(0.1)
    return True


class _Nodes:
    """The primaries of the suite's Redis, and which of them holds a code's bucket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)

    async def ports(self) -> list[tuple[str, int]]:
        if not self.settings.redis_cluster:
            async with Redis.from_url(self.settings.redis_url) as single:
                kwargs = single.connection_pool.connection_kwargs
                return [(str(kwargs["host"]), int(kwargs["port"]))]
        async with RedisCluster.from_url(self.settings.redis_url) as cluster:
            await cluster.initialize()
            return sorted((str(n.host), int(n.port)) for n in cluster.get_primaries())

    async def of(self, code: str) -> tuple[str, int]:
        if not self.settings.redis_cluster:
            return (await self.ports())[0]
        async with RedisCluster.from_url(self.settings.redis_url) as cluster:
            await cluster.initialize()
            node = cluster.get_node_from_key(self.layout.address(code).bucket_key)
            assert node is not None
            return str(node.host), int(node.port)


async def _lose_a_node(stream: StreamRun, scenario: _Scenario, settings: Settings) -> None:
    """FLUSHALL one primary while nobody may rebuild (the lock held around it, as it may sit
    on the flushed node), then a gate attempt for a fresh code of that node; after the lock
    goes, the set must come back whole (redis_loss's after_recovery checks)."""
    nodes = _Nodes(settings)
    victim = (await nodes.ports())[-1]
    paid = await scenario.recorded_code()
    while await nodes.of(paid.code) != victim:
        paid = await scenario.recorded_code()
    attempt = scenario.workload.code(next(scenario.ids))
    while await nodes.of(attempt) != victim:
        attempt = scenario.workload.code(next(scenario.ids))
    client = redis_client(settings)
    try:
        await client.set(LOCK_KEY, TEST_LOCK, ex=60)
        async with Redis(host=victim[0], port=victim[1]) as node:
            await node.flushall()
        await client.set(LOCK_KEY, TEST_LOCK, ex=60)
        stream.report.fault(f"FLUSHALL of the Redis primary on port {victim[1]} (of "
                            f"{len(await nodes.ports())}) at {stream.recorded.last} settlements "
                            "recorded")
        institution, attempt = await scenario.gate_refuses_while_missing(
            paid, " on the node that lost its data", attempt, check="gate_503_while_node_lost")
        await client.delete(LOCK_KEY)
    finally:
        await client.aclose()
    await scenario.after_recovery(paid, institution, attempt)
