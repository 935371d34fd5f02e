"""Several consumer processes in one group reach the same result as one: every reused code has
exactly one first payment and each further use exactly one flag, redeliveries included."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumers.runner import consume
from service.settings import Settings
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


def _workload(institutions: list[str], rng: random.Random) -> tuple[list[Any], Counter[str]]:
    """120 settlements; 30 re-use an earlier code, 6 lack a code. Returns the events and, per
    code, how many times it was sold (every sale after the first must be flagged once)."""
    pool: list[str] = []
    sales: Counter[str] = Counter()
    events = []
    for number in range(120):
        if number % 20 == 19:
            line = f.line(1, [])
        else:
            code = rng.choice(pool) if pool and number % 4 == 3 else f.cn20()
            pool.append(code)
            sales[code] += 1
            line = f.line(1, [code])
        body = f.settlement(rng.choice(institutions), [line])
        events.append({"type": "settlement", "source": "stream", **body})
    return events, sales


async def _flags(api: httpx.AsyncClient, headers: dict[str, str], inst: str) -> list[Any]:
    response = await api.get("/v1/flags", params={"institution_id": inst, "limit": 1000},
                             headers=headers)
    items: list[Any] = response.json()["items"]
    return items


async def _run_and_check(
    api: httpx.AsyncClient, headers: dict[str, str], settings: Settings, seed: int
) -> None:
    institutions = [await f.register(api, headers) for _ in range(4)]
    events, sales = _workload(institutions, random.Random(seed))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        for event in events + events:  # every event delivered twice
            await producer.send(settings.topic_settlements, orjson.dumps(event),
                                key=event["settlement_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    expected = sum(n - 1 for n in sales.values()) + 6

    async def all_flags() -> list[Any]:
        return [fl for i in institutions for fl in await _flags(api, headers, i)]

    flags = await eventually(all_flags, lambda fl: len(fl) >= expected, timeout_s=40)
    await asyncio.sleep(0.5)  # a double would show up now
    flags = await all_flags()
    kinds = Counter(fl["kind"] for fl in flags)
    assert kinds == {"duplicate_payment": expected - 6, "missing_code": 6}
    per_code = Counter(fl["trace_code"] for fl in flags if fl["trace_code"])
    assert per_code == {code: n - 1 for code, n in sales.items() if n > 1}
    for code in [c for c, n in sales.items() if n > 1][:5]:
        history = (await api.get(f"/v1/codes/{code}", headers=headers)).json()
        assert [e["type"] for e in history["events"]] == ["payment"]


async def test_one_process_then_two_processes_in_the_group(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    await _run_and_check(api, admin_headers, settings, seed=1)
    stop = asyncio.Event()
    second = asyncio.create_task(consume(settings, stop))  # joins the group: a rebalance
    try:
        await _run_and_check(api, admin_headers, settings, seed=2)
    finally:
        stop.set()
        await asyncio.wait_for(second, 30)
