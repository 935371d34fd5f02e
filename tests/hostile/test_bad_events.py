"""Hostile events on the settlements topic (CONTRACT §5): a malformed event, or one for an
unknown institution, goes to the DLQ with its reason, original key, partition and offset; the
consumer carries on and loses nothing around it.

Everything here runs on an isolated stack (its own topics, consumer group, consumer and API
app, one partition so the interleaving is the processing order): an event that wedged a
consumer must not take the session's consumer down with it. Events that might wedge one get
a stack each."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from service.settings import Settings
from tests import factories as f
from tests.hostile.support import (
    Json,
    Stack,
    history,
    isolated_stack,
    produce,
    read_topic,
    recorded,
    stream_event,
)
from tests.waiting import eventually

Headers = dict[str, str]


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with isolated_stack(settings) as running:
        yield running


@dataclass(frozen=True)
class Bad:
    """An event the consumer must dead-letter, and what its DLQ reason must mention."""

    name: str
    value: bytes | None
    reason: str


def _raw(event: Json) -> bytes:
    return orjson.dumps(event)


def bad_events(institution: str, recorded_sid: str) -> list[Bad]:
    valid = stream_event(f.settlement(institution, [f.line(1, [f.cn20()])]))
    unknown = f.institution_id("Z")
    ghost = f.settlement_id()
    wrong_type = {**valid, "lines": [{**valid["lines"][0], "quantity": "two"}]}
    return [
        Bad("malformed", b"{not json", "JSON"),
        Bad("truncated", _raw(valid)[:-9], "JSON"),
        Bad("non-UTF-8", b'{"type": "settlement", "settlement_id": "S-\xff\xfe"}', "UTF-8"),
        Bad("not an object", b"[1, 2, 3]", "object"),
        Bad("tombstone (null value)", None, "JSON"),
        Bad("wrong-typed field", _raw(wrong_type), "quantity"),
        Bad("missing field", _raw({k: v for k, v in valid.items() if k != "lines"}), "lines"),
        Bad("unknown institution", _raw({**valid, "institution_id": unknown}), unknown),
        Bad("unknown type", _raw({**valid, "type": "refund"}), "refund"),
        Bad("no type", _raw({k: v for k, v in valid.items() if k != "type"}), "type"),
        Bad("reversal for an unknown settlement", _raw(
            {"type": "reversal", "settlement_id": ghost, "reversal_id": f.settlement_id()}),
            ghost),
        Bad("reversal of a line the settlement lacks", _raw(
            {"type": "reversal", "settlement_id": recorded_sid, "reversal_id": f.settlement_id(),
             "line_nos": [99]}), "99"),
    ]


async def test_bad_events_are_dead_lettered_and_the_valid_ones_around_them_processed(
    api: httpx.AsyncClient, admin_headers: Headers, stack: Stack, producer: AIOKafkaProducer,
) -> None:
    topic = stack.settings.topic_settlements
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    reused, reversed_code, last = f.cn20(), f.cn20(), f.cn20()
    first = f.settlement(a, [f.line(1, [reused])])
    to_reverse = f.settlement(a, [f.line(1, [reversed_code])])
    again = f.settlement(b, [f.line(1, [reused])])  # a second payment: flagged
    closing = f.settlement(b, [f.line(1, [last])])
    valid: list[tuple[str, Json]] = [
        (first["settlement_id"], stream_event(first)),
        (to_reverse["settlement_id"], stream_event(to_reverse)),
        (again["settlement_id"], stream_event(again)),
        (to_reverse["settlement_id"], {"type": "reversal", "reversal_id": f.settlement_id(),
                                       "settlement_id": to_reverse["settlement_id"]}),
        (closing["settlement_id"], stream_event(closing)),
    ]
    bad = bad_events(a, first["settlement_id"])
    sent: dict[str, RecordMetadata] = {}
    # Interleaved: valid, two bad, valid, two bad, ... and the last valid after every bad one.
    for index, (key, event) in enumerate(valid):
        await produce(producer, topic, event, key)
        for item in bad[index * 3:(index + 1) * 3]:
            sent[item.name] = await produce(producer, topic, item.value, f"key-{item.name}")
    assert len(sent) == len(bad)

    dead = await read_topic(stack.settings.kafka_bootstrap, stack.settings.topic_dlq,
                            lambda records: len(records) >= len(bad))
    letters = {(r.key or b"").decode().removeprefix("key-"): r for r in dead}
    assert sorted(letters) == sorted(item.name for item in bad), "DLQ holds exactly the bad"
    assert len(dead) == len(bad), "a bad event was dead-lettered twice"
    for item in bad:
        _assert_letter(letters[item.name], item, sent[item.name], topic)

    found = await eventually(lambda: history(api, admin_headers, last), bool)
    assert found is not None, "the valid event after the bad ones was never processed"
    reused_history = await history(api, admin_headers, reused)
    assert reused_history is not None
    assert [e["settlement_id"] for e in reused_history["events"]] == [first["settlement_id"]]
    assert [(fl["kind"], fl["settlement_id"]) for fl in reused_history["flags"]] == [
        ("duplicate_payment", again["settlement_id"])]
    reversed_history = await eventually(
        lambda: history(api, admin_headers, reversed_code),
        lambda h: h is not None and len(h["events"]) == 2)
    assert reversed_history is not None
    assert [e["type"] for e in reversed_history["events"]] == ["payment", "reversal"]
    assert not stack.consumer.done(), "the consumer stopped"


def _assert_letter(
    record: ConsumerRecord[bytes, bytes], item: Bad, origin: RecordMetadata, topic: str
) -> None:
    letter = orjson.loads(record.value or b"")
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        topic, origin.partition, origin.offset), item.name
    assert item.reason in letter["error"], (item.name, letter["error"])
    value = item.value or b""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(letter["raw_b64"]) == value, item.name
    else:
        assert letter["raw"] == text, item.name


# --- events that might wedge a consumer: each on a stack of its own, all at once -------------

def _with(body: Json, **line: Any) -> Json:
    return {**body, "lines": [{**body["lines"][0], **line}]}


@dataclass(frozen=True)
class Wedge:
    """A settlement sent on the stream or to the gate that the record may be unable to take."""

    name: str
    via: str  # "stream" (produced on the topic) or "gate" (POST /v1/settlements)
    make: Callable[[Json], Json]


WEDGES = [
    Wedge("gate-shaped event with a hollow decision and effects", "stream", lambda b: {
        **stream_event(b), "source": "gate", "decision": {}, "effects": {}}),
    Wedge("NUL in drug_code (stream)", "stream",
          lambda b: stream_event(_with(b, drug_code="XC09\u0000"))),
    Wedge("NUL in a trace code (stream)", "stream",
          lambda b: stream_event(_with(b, trace_codes=["81234\u00005678901234"]))),
    Wedge("NUL in patient_id (stream)", "stream",
          lambda b: stream_event({**b, "patient_id": "psn\u0000"})),
    Wedge("settled_at in year 1 (stream)", "stream",
          lambda b: stream_event({**b, "settled_at": "0001-01-01T00:00:00+08:00"})),
    Wedge("settled_at past 9999 in UTC (stream)", "stream",
          lambda b: stream_event({**b, "settled_at": "9999-12-31T23:59:59-10:00"})),
    Wedge("NUL in drug_code (gate)", "gate", lambda b: _with(b, drug_code="XC09\u0000")),
    Wedge("NUL in a trace code (gate)", "gate",
          lambda b: _with(b, trace_codes=["81234\u00005678901234"])),
    Wedge("settled_at in year 1 (gate)", "gate",
          lambda b: {**b, "settled_at": "0001-01-01T00:00:00+08:00"}),
    Wedge("settled_at past 9999 in UTC (gate)", "gate",
          lambda b: {**b, "settled_at": "9999-12-31T23:59:59-10:00"}),
]


@dataclass(frozen=True)
class Outcome:
    gate_status: int | None  # the gate's answer to the settlement (gate cases)
    recorded: bool  # the settlement is in the record
    next_processed: bool  # the settlement sent after it was processed
    consumer_running: bool


@pytest.fixture(scope="module")
async def wedge_outcomes(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings,
    producer: AIOKafkaProducer,
) -> dict[str, Outcome]:
    """Every case on its own stack, concurrently (a wedged consumer costs the wait once, not
    once per case). Each stack's consumer first proves itself live on a warm-up settlement."""
    institution = await f.register(api, admin_headers)

    async def send(own: Stack, body: Json, event: Json, via: str) -> int | None:
        if via == "gate":
            return (await own.api.post("/v1/settlements", json=event,
                                       headers=admin_headers)).status_code
        await produce(producer, own.settings.topic_settlements, event, body["settlement_id"])
        return None

    async def run(case: Wedge) -> Outcome:
        warm, body, after = (f.settlement(institution, [f.line(1, [f.cn20()])])
                             for _ in range(3))
        async with isolated_stack(settings) as own:
            await send(own, warm, stream_event(warm), "stream")
            live = await eventually(lambda: recorded(settings, warm["settlement_id"]), bool)
            assert live, "the isolated consumer never started"
            status = await send(own, body, case.make(body), case.via)
            await send(own, after, stream_event(after) if case.via == "stream" else after,
                       case.via)
            processed = await eventually(lambda: recorded(settings, after["settlement_id"]),
                                         bool, timeout_s=3)
            return Outcome(status, await recorded(settings, body["settlement_id"]), processed,
                           not own.consumer.done())

    outcomes = await asyncio.gather(*(run(case) for case in WEDGES))
    return {case.name: outcome for case, outcome in zip(WEDGES, outcomes, strict=True)}


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in WEDGES])
def test_a_settlement_the_record_cannot_take_does_not_wedge_the_consumer(
    case: Wedge, wedge_outcomes: dict[str, Outcome]
) -> None:
    """Dead-lettered or recorded, either is fine; what the gate paid (200) must be recorded;
    and the settlement after it is processed."""
    outcome = wedge_outcomes[case.name]
    assert outcome.next_processed, "the consumer is stuck on the settlement before"
    assert outcome.consumer_running
    assert outcome.gate_status in (None, 200, 422)
    if outcome.gate_status == 200:
        assert outcome.recorded, "the gate paid a settlement the record never took"
