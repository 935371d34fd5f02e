"""Secrets stay secret (CONTRACT §3, §4): API keys are stored only as keyed digests, and a
patient's raw `patient_id` is kept and shown only as `patient_ref` — in no table, no HTTP
answer, no Kafka message the service writes, no Redis answer cache and no log record.

Each scan has a positive control (something it must find), so a scanner that silently
stopped looking would fail the test rather than pass it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from service.settings import Settings
from tests import factories as f
from tests.hostile.support import flags_of, history, produce, read_topic, stream_event
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")

Headers = dict[str, str]

# Every column of every table (partitions are scanned through their parent); bytea is searched
# for the needle's bytes, everything else through its text form (jsonb, varchar, arrays...).
_COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
  AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                  WHERE i.inhrelid = format('%I.%I', c.table_schema, c.table_name)::regclass)
ORDER BY c.table_name, c.column_name
"""


async def columns_containing(dsn: str, needle: str) -> list[str]:
    """`table.column` of every column holding `needle` in any row."""
    connection = await asyncpg.connect(dsn)
    try:
        hits = []
        for table, column, data_type in await connection.fetch(_COLUMNS):
            where = ('position(convert_to($1, \'UTF8\') in "{c}") > 0' if data_type == "bytea"
                     else 'strpos("{c}"::text, $1) > 0').format(c=column)
            query = f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE {where})'
            if await connection.fetchval(query, needle):
                hits.append(f"{table}.{column}")
        return hits
    finally:
        await connection.close()


async def test_api_keys_are_stored_only_as_keyed_digests(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pharmacy = await f.register(api, admin_headers)
    raw_keys = [admin_headers["Authorization"].removeprefix("Bearer ")]
    for role, institution in (("admin", None), ("pos", pharmacy), ("regulator", None),
                              ("ops", None)):
        body = {"role": role, "institution_id": institution}
        minted = await api.post("/v1/api-keys", json=body, headers=admin_headers)
        assert minted.status_code == 201, minted.text
        raw_keys.append(minted.json()["key"])
        used = await api.get("/v1/flags?limit=1",
                             headers={"Authorization": f"Bearer {raw_keys[-1]}"})
        assert used.status_code in (200, 403)  # authenticated either way
    for key in raw_keys:
        assert await columns_containing(settings.asyncpg_dsn, key) == [], "raw API key stored"
        assert key not in caplog.text, "raw API key logged"
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        lengths = {len(digest) for digest in await connection.fetchval(
            "SELECT array_agg(key_hash) FROM api_keys")}
    finally:
        await connection.close()
    assert lengths == {32}  # an HMAC-SHA256 digest per key, nothing else
    # Positive control: the scanner finds what is there.
    assert "institutions.institution_id" in await columns_containing(settings.asyncpg_dsn,
                                                                     pharmacy)


async def test_raw_patient_id_appears_nowhere(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings,
    producer: AIOKafkaProducer, live_api: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """One patient's settlements at the gate and on the stream, each paid twice (so flags carry
    the patient too), one reversed; then every place the service writes to is searched."""
    caplog.set_level(logging.DEBUG)
    raw = f"psn-raw-{secrets.token_hex(8)}"
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    gate_code, stream_code = f.cn20(), f.cn20()
    gate = f.settlement(a, [f.line(1, [gate_code])], patient_id=raw)
    gate_dup = f.settlement(b, [f.line(1, [gate_code])], patient_id=raw)
    streamed = f.settlement(a, [f.line(1, [stream_code])], patient_id=raw)
    streamed_dup = f.settlement(b, [f.line(1, [stream_code])], patient_id=raw)
    shown: list[str] = []  # every HTTP answer that shows these settlements

    async def call(method: str, url: str, body: Any = None) -> httpx.Response:
        response = await api.request(method, url, json=body, headers=admin_headers)
        shown.append(f"{method} {url} -> {response.status_code} {response.text}")
        return response

    async with httpx.AsyncClient(base_url=live_api, headers=admin_headers, timeout=10) as http:
        async with http.stream("GET", "/v1/flags/stream", params={"institution_id": b}) as sse:
            assert (await call("POST", "/v1/settlements", gate)).json()["decision"] == "pay"
            assert (await call("POST", "/v1/settlements", gate)).json()["replayed"]
            conflict = await call("POST", "/v1/settlements", {**gate, "patient_id": raw + "x"})
            assert conflict.status_code == 409
            invalid = await call("POST", "/v1/settlements", {**gate, "lines": "wrong"})
            assert invalid.status_code == 422
            await produce(producer, settings.topic_settlements, stream_event(streamed),
                          streamed["settlement_id"])
            await _wait(lambda: history(api, admin_headers, stream_code))
            assert (await call("POST", "/v1/settlements", gate_dup)).json()["flags"]
            await produce(producer, settings.topic_settlements, stream_event(streamed_dup),
                          streamed_dup["settlement_id"])
            flags = await eventually(lambda: flags_of(api, admin_headers, b),
                                     lambda found: len(found) >= 2)
            assert len(flags) == 2
            assert all(flag["patient_ref"] for flag in flags), flags
            events = await asyncio.wait_for(_sse_events(sse, 2), 10)
            shown += events
    reversal = {"reversal_id": f.settlement_id()}
    await call("POST", f"/v1/settlements/{gate['settlement_id']}/reversal", reversal)
    reversed_history = await _wait(lambda: history(api, admin_headers, gate_code),
                                   lambda h: len(h["events"]) == 2)
    assert [e["type"] for e in reversed_history["events"]] == ["payment", "reversal"]
    for body in (gate, gate_dup, streamed, streamed_dup):
        await call("GET", f"/v1/settlements/{body['settlement_id']}")
    for code in (gate_code, stream_code):
        found = await call("GET", f"/v1/codes/{code}")
        assert all(event["patient_ref"] for event in found.json()["events"])
    for institution in (a, b):
        await call("GET", f"/v1/flags?institution_id={institution}")
        await call("GET", f"/v1/institutions/{institution}")

    assert [answer for answer in shown if raw in answer] == [], "raw patient_id in a response"
    assert any(gate["settlement_id"] in answer for answer in shown)  # control

    hits = await columns_containing(settings.asyncpg_dsn, raw)
    assert hits == [], f"raw patient_id stored in {hits}"
    control = await columns_containing(settings.asyncpg_dsn, streamed_dup["settlement_id"])
    assert {"flags.settlement_id", "settlements.settlement_id"} <= set(control)

    ours = {streamed["settlement_id"], streamed_dup["settlement_id"]}  # the input we produced
    await _assert_kafka_clean(settings, raw, ours, {gate["settlement_id"], gate_dup[
        "settlement_id"]}, {gate_code, stream_code})
    await _assert_redis_clean(settings, raw, gate["settlement_id"])

    assert len(caplog.records) > 0
    # aiokafka logs every value it sends at DEBUG: our own producer's lines carry the input.
    ours_sent = tuple(f"Sending (key=b'{sid}'" for sid in ours)
    caplog.text  # noqa: B018 - rendering the records fills in their exc_text
    leaked = [f"{record.name}: {record.getMessage()[:500]}" for record in caplog.records
              if raw in record.getMessage() + (record.exc_text or "")
              and not record.getMessage().startswith(ours_sent)]
    assert leaked == [], "raw patient_id in a log record"
    assert any(gate["settlement_id"] in record.getMessage() for record in caplog.records)


async def _wait(
    probe: Callable[[], Awaitable[dict[str, Any] | None]],
    done: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    value = await eventually(probe, lambda v: v is not None and done(v))
    assert value is not None, "the record never caught up"
    assert done(value), "the record never caught up"
    return value


async def _sse_events(response: httpx.Response, want: int) -> list[str]:
    events: list[str] = []
    current: list[str] = []
    async for line in response.aiter_lines():
        if line:
            current.append(line)
            continue
        if current and not current[0].startswith(":"):
            events.append("\n".join(current))
        current = []
        if len(events) == want:
            break
    return events


async def _assert_kafka_clean(
    settings: Settings, raw: str, ours: set[str], gate_ids: set[str], codes: set[str]
) -> None:
    """The service's own messages: the gate's settlements and every flag. The stream input we
    produced carries the raw id by definition (it is the insurer's), and is the control."""
    def has(keys: set[str]) -> Callable[[list[Any]], bool]:
        return lambda records: keys <= {r.key.decode() for r in records if r.key}

    settlements = await read_topic(settings.kafka_bootstrap, settings.topic_settlements,
                                   has(gate_ids | ours))
    flags = await read_topic(settings.kafka_bootstrap, settings.topic_flags, has(codes))
    carrying = [r for r in [*settlements, *flags] if raw.encode() in (r.value or b"")]
    producers = [(r.topic, r.key.decode() if r.key else None,
                  orjson.loads(r.value or b"{}").get("source")) for r in carrying]
    assert sorted(producers) == sorted(
        (settings.topic_settlements, key, "stream") for key in ours
    ), "raw patient_id in a message the service wrote"
    gate_events = [orjson.loads(r.value or b"{}") for r in settlements
                   if r.key and r.key.decode() in gate_ids]
    assert gate_events
    assert all(event["patient_ref"] for event in gate_events if event["type"] == "settlement")


async def _assert_redis_clean(settings: Settings, raw: str, settlement_id: str) -> None:
    """The gate's answer cache (tg:recent:*) holds what a replay or reversal needs."""
    redis = Redis.from_url(settings.redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match="tg:recent:*", count=1000)]
        assert f"tg:recent:s:{settlement_id}".encode() in keys  # control
        for key in keys:
            kind = await redis.type(key)
            values = ([await redis.get(key)] if kind == b"string"
                      else await redis.lrange(key, 0, -1) if kind == b"list" else [])
            assert not any(raw.encode() in (value or b"") for value in values), key
    finally:
        await redis.aclose()
