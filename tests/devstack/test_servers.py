"""Each embedded server starts on a free loopback port, answers, stops and leaves no process;
misuse (a taken port, an unusable data dir, a missing binary) fails with a readable error."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cli.devstack.errors import BinaryNotFoundError, DataDirError, PortInUseError
from cli.devstack.process import free_port, spawn
from cli.devstack.servers import (
    ServerHandle,
    create_topics,
    start_kafka,
    start_postgres,
    start_redis,
)


def running(pid: int) -> bool:
    """Alive and not a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def stop_and_check(handle: ServerHandle) -> None:
    pids = handle.pids
    # Only the server itself must be up: a descendant listed a moment ago may be a backend
    # that was exiting (the test's own connection, just closed).
    assert running(handle.pid)
    handle.stop()
    handle.stop()  # idempotent
    assert [pid for pid in pids if running(pid)] == []


async def test_postgres_cold_then_warm_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    first = start_postgres(data_dir, ephemeral=True)
    try:
        assert first.url.startswith("postgresql+asyncpg://tracegate:tracegate@127.0.0.1:")
        connection = await asyncpg.connect(first.dsn)
        assert await connection.fetchval("SELECT current_database()") == "tracegate"
        assert (await connection.fetchval("SHOW server_version")).startswith("18.")
        await connection.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await connection.close()
    finally:
        stop_and_check(first)

    second = start_postgres(data_dir)  # reuses the cluster
    try:
        connection = await asyncpg.connect(second.dsn)
        assert await connection.fetchval("SELECT x FROM kept") == 42
        await connection.close()
    finally:
        stop_and_check(second)


async def test_redis_answers_with_the_configured_settings(tmp_path: Path) -> None:
    handle = start_redis(tmp_path / "redis")
    try:
        client = aioredis.Redis.from_url(handle.url, decode_responses=True)
        assert await client.ping()
        config = await client.config_get("*")
        assert config["save"] == ""
        assert config["appendonly"] == "no"
        assert config["bind"] == "127.0.0.1"
        assert config["hash-max-ziplist-entries"] == "512"
        assert config["hash-max-ziplist-value"] == "64"
        await client.aclose()
    finally:
        stop_and_check(handle)


async def test_kafka_topics_produce_and_consume(tmp_path: Path) -> None:
    handle = start_kafka(log_path=tmp_path / "kafka.log")
    try:
        create_topics(handle.url, "t.settlements", "t.flags", "t.dlq", 6)
        create_topics(handle.url, "t.settlements", "t.flags", "t.dlq", 6)  # idempotent
        await _assert_partitions(handle.url, {"t.settlements": 6, "t.flags": 1, "t.dlq": 1})
        await _round_trip(handle.url, "t.settlements")
    finally:
        stop_and_check(handle)


async def _assert_partitions(bootstrap: str, expected: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(expected))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == expected


async def _round_trip(bootstrap: str, topic: str) -> None:
    # Tansu has no InitProducerId for idempotent producers: the service must not enable it.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"value", key=b"key", partition=3)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 3)])
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    assert [(m.key, m.value, m.offset) for m in batch[TopicPartition(topic, 3)]] == [
        (b"key", b"value", sent.offset)
    ]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "start",
    [
        lambda tmp, port: start_postgres(tmp / "pg", port, ephemeral=True),
        lambda tmp, port: start_redis(tmp / "redis", port),
        lambda tmp, port: start_kafka(port, log_path=tmp / "kafka.log"),
    ],
    ids=["postgres", "redis", "kafka"],
)
def test_taken_port_is_a_readable_error(
    tmp_path: Path, taken_port: int, start: Callable[[Path, int], ServerHandle]
) -> None:
    with pytest.raises(PortInUseError, match=f"127.0.0.1:{taken_port} .* already in use"):
        start(tmp_path, taken_port)


def test_data_dir_of_another_postgres_version(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg15"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")
    with pytest.raises(DataDirError, match="PostgreSQL 15 cluster .* PostgreSQL 18"):
        start_postgres(data_dir)


def test_data_dir_with_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataDirError, match="neither empty nor a PostgreSQL data directory"):
        start_postgres(tmp_path)


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataDirError, match="not usable"):
        start_postgres(tmp_path / "a-file" / "pg")


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(BinaryNotFoundError, match="cannot run /nonexistent/server"):
        spawn("server", ["/nonexistent/server"], log_path=tmp_path / "x.log")
