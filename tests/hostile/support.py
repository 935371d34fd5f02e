"""Helpers shared by the hostile-input and security tests: Kafka in and out, the reads that trail
the gate, an API client that turns a 500 into a response (instead of re-raising the app's
exception), and an isolated stack — the same servers, but its own topics (one settlements
partition, so what is produced is processed in that order), consumer group, app and consumer —
for input that might wedge a consumer and must not reach the session's one."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition
from fastapi import FastAPI

from cli.devstack.servers import create_topics
from consumers.runner import consume
from service.api.app import create_app
from service.settings import Settings
from tests import factories as f

Json = dict[str, Any]


def tolerant_client(app: FastAPI) -> httpx.AsyncClient:
    """In-process client whose requests answer 500 like a real server instead of raising."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://tracegate", timeout=30)


@pytest.fixture(scope="session")
async def tolerant_api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with tolerant_client(app) as client:
        yield client


@pytest.fixture(scope="module")
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                             enable_idempotence=False)
    await kafka.start()
    yield kafka
    await kafka.stop()


def stream_event(body: Json) -> Json:
    """A settlement as the insurer's platform publishes it (it never passed the gate)."""
    return {"type": "settlement", "source": "stream", **body}


async def produce(
    producer: AIOKafkaProducer, topic: str, value: Json | bytes | None, key: str
) -> RecordMetadata:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return await producer.send_and_wait(topic, raw, key=key.encode())


async def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_s: float = 20.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the topic from the start, read until `done(records)` and one more quiet
    poll (so a doubled record would show), or until the time is up. Partitions are assigned,
    not joined as a group: no rebalance to wait for."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.topics()  # fetches the metadata that names the partitions
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batch = await reader.getmany(timeout_ms=200)
            got = [record for part in batch.values() for record in part]
            records += got
            if not got and done(records):
                break
    finally:
        await reader.stop()
    return records


async def history(api: httpx.AsyncClient, headers: dict[str, str], code: str) -> Json | None:
    response = await api.get(f"/v1/codes/{code}", headers=headers)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def flags_of(
    api: httpx.AsyncClient, headers: dict[str, str], institution: str
) -> list[Json]:
    response = await api.get("/v1/flags", params={"institution_id": institution, "limit": 1000},
                             headers=headers)
    assert response.status_code == 200, response.text
    items: list[Json] = response.json()["items"]
    return items


async def recorded(settings: Settings, settlement_id: str) -> bool:
    """Whether the record (PostgreSQL, not the gate's answer cache in Redis) has it."""
    query = "SELECT EXISTS (SELECT 1 FROM settlements WHERE settlement_id = $1)"
    [row] = await f.record_rows(settings.asyncpg_dsn, query, settlement_id)
    return bool(row[0])


@dataclass
class Stack:
    """An isolated stack: `api` is its own app (whose gate publishes to its own topic) and
    `consumer` its own consumer task on that topic."""

    settings: Settings
    api: httpx.AsyncClient
    consumer: asyncio.Task[None]


@contextlib.asynccontextmanager
async def isolated_stack(shared: Settings) -> AsyncIterator[Stack]:
    run = secrets.token_hex(3)
    own = shared.model_copy(update={
        "topic_settlements": f"iso.{run}.settlements", "topic_flags": f"iso.{run}.flags",
        "topic_dlq": f"iso.{run}.dlq", "consumer_group": f"iso-{run}",
        "settlements_partitions": 1,
    })
    create_topics(own.kafka_bootstrap, own.topic_settlements, own.topic_flags, own.topic_dlq,
                  own.settlements_partitions)
    app = create_app(own)
    stop = asyncio.Event()
    async with app.router.lifespan_context(app), tolerant_client(app) as api:
        task = asyncio.create_task(consume(own, stop))
        try:
            yield Stack(own, api, task)
        finally:
            stop.set()
            # A wedged consumer retries its batch for ever; it is cut off, not awaited.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 3)
