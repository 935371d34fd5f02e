"""Builders for test data. Every id and code is fresh, so tests share the servers without
seeing each other's records."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson

from service.settlements.events import Incoming

_counter = itertools.count(1)
_offsets = itertools.count(1)


def cn20() -> str:
    """A fresh national trace code: 8 + 19 digits."""
    return "8" + str(secrets.randbelow(10**19)).zfill(19)


def gs1_serial() -> str:
    """A fresh AI 21 serial for GTIN 06901234567892 (10 characters of the GS1 set)."""
    return settlement_id()[-10:].replace("-", "A").upper()


def institution_id(prefix: str = "T") -> str:
    return (prefix + secrets.token_hex(6).upper())[:12]


def settlement_id() -> str:
    return f"S-{secrets.token_hex(6)}-{next(_counter)}"


def line(
    line_no: int, codes: list[str], *, quantity: int | None = None, split: bool = False,
    pack_size: int | None = None, no_code_reason: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "line_no": line_no, "drug_code": "XC09AAL012A001010100543",
        "quantity": quantity if quantity is not None else max(len(codes), 1), "split": split,
        "trace_codes": codes,
    }
    if pack_size is not None:
        body["pack_size"] = pack_size
    if no_code_reason is not None:
        body["no_code_reason"] = no_code_reason
    return body


def settlement(
    institution: str, lines: list[dict[str, Any]], *, settled_at: str = "2025-07-01 10:00:00",
    patient_id: str | None = "psn-0001", sid: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "settlement_id": sid or settlement_id(), "institution_id": institution,
        "settled_at": settled_at, "lines": lines,
    }
    if patient_id is not None:
        body["patient_id"] = patient_id
    return body


async def record_rows(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows straight from the record (PostgreSQL), past every cache the API reads through."""
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def stream_record(topic: str, body: dict[str, Any], partition: int = 0) -> Incoming:
    """`body` as the insurer's platform streams it (a settlement unless it names its type), as
    a consumer receives it from `topic` (for tests that hand batches to the stream path
    themselves: service.settlements.stream.process)."""
    sid = body["settlement_id"]
    value = orjson.dumps({"type": "settlement", "source": "stream", **body})
    return Incoming(topic, partition, next(_offsets), int(time.time() * 1000), sid.encode(),
                    value)


def stream_reversal(settlement: dict[str, Any]) -> dict[str, Any]:
    """A streamed reversal of every line of `settlement`."""
    sid = settlement["settlement_id"]
    return {"type": "reversal", "source": "stream", "settlement_id": sid,
            "reversal_id": f"R-{sid}"}


async def register(
    api: httpx.AsyncClient, admin: dict[str, str], kind: str = "retail_pharmacy",
    go_live_override: str | None = None, *, institution: str | None = None,
) -> str:
    iid = institution or institution_id()
    body = {"name": f"test {iid}", "kind": kind, "region": "110105",
            "go_live_override": go_live_override}
    response = await api.put(f"/v1/institutions/{iid}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    return iid


async def key_for(
    api: httpx.AsyncClient, admin: dict[str, str], role: str, institution: str | None = None
) -> dict[str, str]:
    body: dict[str, Any] = {"role": role}
    if institution is not None:
        body["institution_id"] = institution
    response = await api.post("/v1/api-keys", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def replay_and_change(
    api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    """`body` posted again as it is, then with another line: a replay, then a conflict."""
    again = await api.post("/v1/settlements", json=body, headers=headers)
    changed = {**body, "lines": [line(1, [cn20()])]}
    return again, await api.post("/v1/settlements", json=changed, headers=headers)


async def settle(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """The gate's answer to `body`, which must be 200."""
    response = await api.post("/v1/settlements", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def history(api: httpx.AsyncClient, headers: dict[str, str], code: str) -> Any:
    """A code's history, or None while the record has not seen it."""
    response = await api.get(f"/v1/codes/{quote(code, safe='')}", headers=headers)
    return response.json() if response.status_code == 200 else None


async def topic_records(settings: Any, topic: str, key: bytes) -> list[Incoming]:
    """The records of `topic` with `key`, as a consumer would fetch them (read from the start
    to the end offsets of every partition)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or await _partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Incoming] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            found += [Incoming(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value or b"")
                      for records in batch.values() for r in records if r.key == key]
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh consumer knows none
    return set(consumer.partitions_for_topic(topic) or ())
