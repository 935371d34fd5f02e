"""The gate, the consumers and the rebuild on a Redis Cluster of three primaries, as production
runs with `TRACEGATE_REDIS_CLUSTER=true`: every script call must stay in one slot, and the set
spreads over all the nodes. PostgreSQL and Kafka are the session's; topics, group and
institutions are this module's own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from cli.devstack.servers import RedisClusterHandle, create_topics, start_redis_cluster
from consumers.runner import consume
from service.api.app import create_app
from service.claims.schemas import CodeState
from service.firstseen.encoding import Layout, encode_state
from service.firstseen.rebuild import LOCK_KEY
from service.settings import Settings
from tests import factories as f
from tests.waiting import eventually


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterHandle]:
    running = start_redis_cluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cluster_settings(settings: Settings, cluster: RedisClusterHandle) -> Settings:
    run = secrets.token_hex(3)
    own = settings.model_copy(update={
        "redis_url": cluster.url, "redis_cluster": True,
        "topic_settlements": f"test.{run}.cluster.settlements",
        "topic_flags": f"test.{run}.cluster.flags", "topic_dlq": f"test.{run}.cluster.dlq",
        "consumer_group": f"test-{run}-cluster",
    })
    create_topics(own.kafka_bootstrap, own.topic_settlements, own.topic_flags, own.topic_dlq,
                  own.settlements_partitions)
    return own


@pytest.fixture(scope="module")
async def cluster_api(cluster_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API and one consumer loop, both on the cluster."""
    application = create_app(cluster_settings)
    stop = asyncio.Event()
    async with application.router.lifespan_context(application):
        consumer = asyncio.create_task(consume(cluster_settings, stop))
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tracegate") as client:
            yield client
        stop.set()
        await asyncio.wait_for(consumer, 30)


@pytest.fixture
async def nodes(cluster: RedisClusterHandle) -> AsyncIterator[list[Redis]]:
    """Each node on its own, for what a cluster client will not do (FLUSHALL everywhere)."""
    clients = [Redis.from_url(node.url) for node in cluster.nodes]
    yield clients
    for client in clients:
        await client.aclose()


def _port_of(client: RedisCluster, key: str) -> int:
    """The port of the primary that owns `key`'s slot."""
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def _owning_nodes(cluster: RedisClusterHandle, layout: Layout, codes: list[str]) -> int:
    client = RedisCluster.from_url(cluster.url)
    try:
        await client.initialize()
        return len({_port_of(client, layout.address(code).bucket_key) for code in codes})
    finally:
        await client.aclose()


async def test_gate_and_stream_decide_on_a_cluster(
    cluster_api: httpx.AsyncClient, admin_headers: dict[str, str],
    cluster_settings: Settings, cluster: RedisClusterHandle,
) -> None:
    a, b = [await f.register(cluster_api, admin_headers) for _ in range(2)]
    layout = Layout(cluster_settings.hotset_bucket_bits, cluster_settings.hotset_slot_groups)
    codes = [f.cn20() for _ in range(12)]
    # codes on every node: twelve random ones miss one of three about once in forty draws
    while await _owning_nodes(cluster, layout, codes) < len(cluster.nodes):
        codes = [f.cn20() for _ in range(12)]
    first = await f.settle(cluster_api, admin_headers, f.settlement(a, [f.line(1, codes)]))
    assert first["decision"] == "pay"
    again = await f.settle(cluster_api, admin_headers, f.settlement(b, [f.line(1, codes[:3])]))
    assert [r["code"] for r in again["lines"][0]["reasons"]] == ["DUPLICATE_PAYMENT"] * 3
    streamed = {"type": "settlement", "source": "stream",
                **f.settlement(b, [f.line(1, [codes[5]])])}
    producer = AIOKafkaProducer(bootstrap_servers=cluster_settings.kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(cluster_settings.topic_settlements, orjson.dumps(streamed),
                                     key=streamed["settlement_id"].encode())
    finally:
        await producer.stop()
    history = await eventually(partial(f.history, cluster_api, admin_headers, codes[5]),
                               lambda h: h is not None and len(h["flags"]) == 1)
    assert [flag["settlement_id"] for flag in history["flags"]] == [streamed["settlement_id"]]


async def _plant_claim(settings: Settings, away_from: int) -> str:
    """A claim only Redis holds, on a node other than the one on port `away_from`."""
    client = RedisCluster.from_url(settings.redis_url)
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    try:
        await client.initialize()
        while True:
            code = f.cn20()
            address = layout.address(code)
            if _port_of(client, address.bucket_key) != away_from:
                break
        await client.hset(address.bucket_key, address.field, encode_state(CodeState(1, 1, 0)))
        return code
    finally:
        await client.aclose()


@asynccontextmanager
async def _data_lost_unrebuilt(settings: Settings, node: Redis) -> AsyncIterator[None]:
    """`node` loses its data and nobody may rebuild the set until the block ends: the rebuild
    lock is taken before the flush and again after it (the flush may have taken it along)."""
    client = RedisCluster.from_url(settings.redis_url)
    try:
        await client.set(LOCK_KEY, "held-by-test", ex=60)
        await node.flushall()
        await client.set(LOCK_KEY, "held-by-test", ex=60)
        yield
    finally:
        await client.delete(LOCK_KEY)
        await client.aclose()


async def test_a_primary_that_lost_its_data_has_the_set_rebuilt(
    cluster_api: httpx.AsyncClient, admin_headers: dict[str, str], nodes: list[Redis],
    cluster_settings: Settings, cluster: RedisClusterHandle,
) -> None:
    """One primary restarted empty (no replica took over): its groups' markers are gone, so
    the whole set is cleared on every node and rebuilt from the record; every code is a
    duplicate again, and what only Redis held is gone."""
    a, b = [await f.register(cluster_api, admin_headers) for _ in range(2)]
    codes = [f.cn20() for _ in range(12)]
    assert (await f.settle(cluster_api, admin_headers, f.settlement(a, [f.line(1, codes)])))[
        "decision"] == "pay"
    for code in codes:
        assert await eventually(partial(f.history, cluster_api, admin_headers, code), bool)
    # in no record, on a node that keeps its data: the rebuild must drop it
    ghost = await _plant_claim(cluster_settings, away_from=cluster.nodes[1].port)
    fresh_codes = [f.cn20() for _ in range(12)]
    async with _data_lost_unrebuilt(cluster_settings, nodes[1]):
        refused = await cluster_api.post("/v1/settlements", headers=admin_headers,
                                         json=f.settlement(b, [f.line(1, fresh_codes)]))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "HOT_SET_REBUILDING"
        assert int(refused.headers["Retry-After"]) > 0
    duplicate = await eventually(
        lambda: cluster_api.post("/v1/settlements", headers=admin_headers,
                                 json=f.settlement(b, [f.line(1, codes)])),
        lambda response: response.status_code != 503, timeout_s=30,
    )
    assert duplicate.status_code == 200, duplicate.text
    reasons = duplicate.json()["lines"][0]["reasons"]
    assert [r["code"] for r in reasons] == ["DUPLICATE_PAYMENT"] * len(codes)
    # the refused settlement claimed nothing, on the nodes that kept their markers either
    fresh = await f.settle(cluster_api, admin_headers,
                           f.settlement(a, [f.line(1, [ghost, *fresh_codes])]))
    assert fresh["decision"] == "pay", fresh


async def test_a_primary_that_lost_its_scripts_is_sent_them_again(
    cluster_api: httpx.AsyncClient, admin_headers: dict[str, str], nodes: list[Redis],
) -> None:
    """A primary that restarted (or had SCRIPT FLUSH) refuses the calls for its slots; the
    script is loaded again and the settlement is decided as if nothing had happened."""
    a, b = [await f.register(cluster_api, admin_headers) for _ in range(2)]
    codes = [f.cn20() for _ in range(12)]
    await nodes[2].script_flush()
    first = await f.settle(cluster_api, admin_headers, f.settlement(a, [f.line(1, codes)]))
    assert first["decision"] == "pay", first
    again = await f.settle(cluster_api, admin_headers, f.settlement(b, [f.line(1, codes)]))
    reasons = again["lines"][0]["reasons"]
    assert [r["first_payment"]["institution_id"] for r in reasons] == [a] * len(codes)
