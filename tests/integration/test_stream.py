"""The consumers against the real broker, Redis and PostgreSQL: gate settlements recorded as
decided, streamed settlements judged by the same rules, redeliveries changing nothing, bad
events dead-lettered, flags on the topic and the SSE stream."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.claims.schemas import ClaimEffect, Effect
from service.claims.service import owner_token
from service.settings import Settings
from service.settlements import stream
from service.settlements.stream import StreamPorts
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


@pytest.fixture(scope="module")
async def producer(settings: Settings) -> Any:
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await kafka.start()
    yield kafka
    await kafka.stop()


async def _produce(producer: AIOKafkaProducer, topic: str, events: list[Any]) -> None:
    for event in events:
        value = event if isinstance(event, bytes) else orjson.dumps(event)
        key = event.get("settlement_id", "x") if isinstance(event, dict) else "bad"
        await producer.send_and_wait(topic, value, key=str(key).encode())


def _stream(body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "settlement", "source": "stream", **body}


async def _flags(
    api: httpx.AsyncClient, headers: dict[str, str], institution: str
) -> list[dict[str, Any]]:
    response = await api.get("/v1/flags", params={"institution_id": institution, "limit": 1000},
                             headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _read_topic(settings: Settings, topic: str, want: int) -> list[Any]:
    """Everything on the topic: read until `want` arrived and then a quiet spell (so a
    double would show), or until nothing more comes."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"reader-{uuid.uuid4()}", auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=300)
            got = [r for part in batch.values() for r in part]
            records += got
            if not got and len(records) >= want:
                break
    finally:
        await consumer.stop()
    return records


async def test_gate_settlement_is_recorded_as_decided(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    pharmacy = await f.register(api, admin_headers)
    code = f.cn20()
    body = f.settlement(pharmacy, [f.line(1, [code])], patient_id="psn-secret-42")
    assert (await api.post("/v1/settlements", json=body, headers=admin_headers)).json()[
        "decision"] == "pay"
    history = await eventually(lambda: f.history(api, admin_headers, code), bool)
    assert history is not None
    [event] = history["events"]
    assert (event["type"], event["settlement_id"], event["institution_id"]) == (
        "payment", body["settlement_id"], pharmacy)
    assert event["patient_ref"]
    assert "psn-secret-42" not in orjson.dumps(history).decode()
    assert history["status"] == "paid"


async def test_streamed_settlements_with_duplicates_redeliveries_and_bad_events(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    reused, fresh = f.cn20(), f.cn20()
    first = f.settlement(a, [f.line(1, [reused]), f.line(2, [fresh])])
    again = f.settlement(b, [f.line(1, [reused])])  # 回流: paid twice, across institutions
    missing = f.settlement(b, [f.line(1, [])])
    unknown = f.settlement(f.institution_id("Z"), [f.line(1, [f.cn20()])])
    good = [_stream(first), _stream(again), _stream(missing)]
    bad: list[Any] = [b"{not json", b"\xff\xfe", {"type": "settlement", "settlement_id": 5},
                      _stream(unknown), {"type": "wat"}]
    # Different settlement ids land on different partitions, whose relative order is not
    # defined; the first payment is whichever is processed first, so send it first.
    await _produce(producer, settings.topic_settlements, good[:1])
    await eventually(lambda: f.history(api, admin_headers, reused), bool)
    await _produce(producer, settings.topic_settlements, [*good, *bad, *good])  # redelivered
    flags = await eventually(lambda: _flags(api, admin_headers, b), lambda x: len(x) >= 2)
    kinds = sorted((fl["kind"], fl["severity"], fl["trace_code"]) for fl in flags)
    assert kinds == [("duplicate_payment", "high", reused), ("missing_code", "low", None)]
    assert [fl for fl in flags if fl["kind"] == "duplicate_payment"][0]["first_payment"][
        "settlement_id"] == first["settlement_id"]
    assert await _flags(api, admin_headers, a) == []
    dead = await _read_topic(settings, settings.topic_dlq, len(bad))
    errors = [orjson.loads(r.value) for r in dead]
    assert len(errors) == len(bad)
    assert any("raw_b64" in e for e in errors)
    assert any("unknown institution" in e["error"] for e in errors)
    assert all({"error", "topic", "partition", "offset"} <= e.keys() for e in errors)
    history = await f.history(api, admin_headers, reused)
    assert history is not None
    payments = [e for e in history["events"] if e["type"] == "payment"]
    # The streamed duplicate is judged as the gate would (refused), so it is on the claw-back
    # list as a flag and never a payment of the code.
    assert [(p["settlement_id"], p.get("duplicate", False)) for p in payments] == [
        (first["settlement_id"], False)]
    assert [fl["settlement_id"] for fl in history["flags"]] == [again["settlement_id"]]


async def test_a_settlement_redelivered_after_its_reversal_claims_nothing(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    """Found by the full load test: settlement, its reversal, then a redelivered copy of the
    settlement (same partition, in that order). The copy is already recorded, so it must not
    take the released code again; the next payment of the code is a first payment."""
    institution = await f.register(api, admin_headers)
    code = f.cn20()
    paid = _stream(f.settlement(institution, [f.line(1, [code])]))
    reversal = f.stream_reversal(paid)
    await _produce(producer, settings.topic_settlements, [paid, reversal, paid])
    await eventually(lambda: f.history(api, admin_headers, code),
                     lambda h: h is not None and len(h["events"]) == 2)
    resold = _stream(f.settlement(institution, [f.line(1, [code])]))
    await _produce(producer, settings.topic_settlements, [resold])
    history = await eventually(lambda: f.history(api, admin_headers, code),
                               lambda h: h is not None and len(h["events"]) >= 3)
    assert history is not None
    # History is in event time: the reversal's is its Kafka timestamp, after both sales.
    assert sorted((e["type"], e["settlement_id"]) for e in history["events"]) == sorted([
        ("payment", paid["settlement_id"]), ("reversal", paid["settlement_id"]),
        ("payment", resold["settlement_id"])])
    assert await _flags(api, admin_headers, institution) == []


async def test_an_opened_pack_is_unclaimed_in_the_record_once_all_its_units_come_back(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    """Split units add up as deltas in code_claims; the row goes when the total reaches
    zero, and only then (a rebuild reads this table, so a leftover row would claim the pack
    again)."""
    institution, code = await f.register(api, admin_headers), f.cn20()
    sales = [_stream(f.settlement(institution, [f.line(1, [code], split=True, quantity=units,
                                                        pack_size=10)])) for units in (7, 3)]
    connection = await asyncpg.connect(settings.asyncpg_dsn)

    async def units_used() -> int | None:
        found = await connection.fetchval(
            "SELECT units_used FROM code_claims WHERE code = $1", code)
        return None if found is None else int(found)

    try:
        await _produce(producer, settings.topic_settlements, [*sales, f.stream_reversal(sales[0])])
        assert await eventually(units_used, lambda u: u == 3) == 3
        await _produce(producer, settings.topic_settlements, [f.stream_reversal(sales[1])])
        assert await eventually(units_used, lambda u: u is None) is None
    finally:
        await connection.close()


async def test_flags_reach_the_topic_exactly_once(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    a = await f.register(api, admin_headers)
    code = f.cn20()
    events = [_stream(f.settlement(a, [f.line(1, [code])])) for _ in range(3)]
    await _produce(producer, settings.topic_settlements, events + events)
    flags = await eventually(lambda: _flags(api, admin_headers, a), lambda x: len(x) >= 2)
    ids = {fl["flag_id"] for fl in flags}
    assert len(ids) == 2
    records = await _read_topic(settings, settings.topic_flags, 2)
    ours = [r for r in records if orjson.loads(r.value)["flag_id"] in ids]
    assert sorted(orjson.loads(r.value)["flag_id"] for r in ours) == sorted(ids)
    # CONTRACT §5: keyed by the canonical trace code, the value a whole flag.
    assert {r.key for r in ours} == {code.encode()}
    fields = {"flag_id", "kind", "severity", "trace_code", "institution_id", "settlement_id",
              "line_no", "settled_at", "detected_at", "patient_ref", "first_payment"}
    flags_on_topic = [orjson.loads(record.value) for record in ours]
    for flag in flags_on_topic:
        assert fields <= flag.keys(), flag
    # Partitions are not ordered among themselves: whichever came first is the first payment,
    # and both duplicates cite that one, never themselves.
    firsts = {flag["first_payment"]["settlement_id"] for flag in flags_on_topic}
    assert len(firsts) == 1
    assert firsts <= {e["settlement_id"] for e in events}
    assert firsts.isdisjoint(flag["settlement_id"] for flag in flags_on_topic)


async def test_flags_a_crash_kept_off_the_topic_go_out_when_the_batch_comes_again(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record commits before the flags are published: a consumer that dies in between
    leaves them marked unpublished, and the redelivered batch publishes them."""
    inst, code = await f.register(api, admin_headers), f.cn20()
    sales = [f.settlement(inst, [f.line(1, [code])]) for _ in range(2)]
    records = [f.stream_record(settings.topic_settlements, sale) for sale in sales]

    async def die(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("killed between the commit and the publish")

    async with StreamPorts.open(settings) as ports:
        monkeypatch.setattr(stream, "publish_flags", die)
        with pytest.raises(ConnectionError):
            await stream.process(records, ports)
        assert await _published(settings, sales[1]["settlement_id"]) == [False]
        monkeypatch.undo()
        await stream.process(records, ports)  # redelivered: nothing is new but the flag's publish
    assert await _published(settings, sales[1]["settlement_id"]) == [True]
    on_topic = [orjson.loads(r.value) for r in await _read_topic(settings, settings.topic_flags, 1)]
    assert [flag["trace_code"] for flag in on_topic
            if flag["settlement_id"] == sales[1]["settlement_id"]] == [code]


async def test_an_institution_registered_after_its_settlement_was_dead_lettered_is_known_next(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """CONTRACT §5: an event for an unknown institution goes to the DLQ. The consumer caches the
    institutions it found, never one it did not: once registered, its settlements count."""
    iid = f.institution_id()
    early, late = (f.settlement(iid, [f.line(1, [f.cn20()])]) for _ in range(2))
    async with StreamPorts.open(settings) as ports:
        await stream.process([f.stream_record(settings.topic_settlements, early)], ports)
        await f.register(api, admin_headers, institution=iid)
        await stream.process([f.stream_record(settings.topic_settlements, late)], ports)
    rows = await f.record_rows(settings.asyncpg_dsn,
                               "SELECT settlement_id FROM settlements WHERE institution_id = $1",
                               iid)
    assert [row["settlement_id"] for row in rows] == [late["settlement_id"]]
    dead = [orjson.loads(r.value) for r in await _read_topic(settings, settings.topic_dlq, 1)]
    assert [d["error"] for d in dead if early["settlement_id"] in d.get("raw", "")] == [
        f"unknown institution {iid}"]


async def test_a_batch_decided_in_slices_and_waves_is_judged_as_in_kafka_order(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """Slices of two settlements, so each slice is decided while the one before it is still
    being written: a duplicate cites a first payment whose record is not committed yet, a
    reversal waits for the sale it reverses, and the pack sold again after it is a first
    payment; one cites a payment an earlier batch recorded (read from the record, not the
    transaction being written). Partition 1 has no reversal, so it is decided before
    partition 0's."""
    inst = await f.register(api, admin_headers)
    x, y, z, w = f.cn20(), f.cn20(), f.cn20(), f.cn20()
    a, b, c, d = (f.settlement(inst, [f.line(1, [code])]) for code in (x, y, x, y))
    e, g, h, k, earlier = (f.settlement(inst, [f.line(1, [code])]) for code in (z, z, y, w, w))
    topic = settings.topic_settlements
    batch = [f.stream_record(topic, body, 0) for body in (a, b, f.stream_reversal(a), c, d)]
    batch += [f.stream_record(topic, body, 1) for body in (e, g, h, k)]
    async with StreamPorts.open(settings) as ports:
        await stream.process([f.stream_record(topic, earlier)], ports)
        await stream.process(batch, ports)
    flags = await f.record_rows(
        settings.asyncpg_dsn,
        "SELECT settlement_id, trace_code, first_payment->>'settlement_id' AS first "
        "FROM flags WHERE institution_id = $1", inst)
    assert sorted((r["settlement_id"], r["trace_code"], r["first"]) for r in flags) == sorted([
        (g["settlement_id"], z, e["settlement_id"]),
        (h["settlement_id"], y, b["settlement_id"]),
        (d["settlement_id"], y, b["settlement_id"]),
        (k["settlement_id"], w, earlier["settlement_id"])])
    history = await f.history(api, admin_headers, x)
    assert sorted((event["type"], event["settlement_id"]) for event in history["events"]) == sorted(
        [("payment", a["settlement_id"]), ("reversal", a["settlement_id"]),
         ("payment", c["settlement_id"])])


async def test_a_batch_decided_ahead_of_the_one_before_being_written_is_judged_in_order(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """The consumer decides a batch while the one before it is written (`prepare` with its
    `ahead`): the second batch sees the first's payments, reversal targets and opened pack
    though none is committed, and a copy of a first-batch event in it changes nothing."""
    inst = await f.register(api, admin_headers)
    x, y, pack = f.cn20(), f.cn20(), f.cn20()
    a, b, c, d = (f.settlement(inst, [f.line(1, [code])]) for code in (x, y, x, y))
    opened, more = (f.settlement(inst, [f.line(1, [pack], quantity=units, split=True,
                                                pack_size=10)]) for units in (3, 4))
    topic = settings.topic_settlements
    first = [f.stream_record(topic, body) for body in (a, b, opened)]
    second = [f.stream_record(topic, body) for body in
              (f.stream_reversal(a), c, d, more, b, f.stream_reversal(opened))]
    async with StreamPorts.open(settings) as ports:
        decided = await stream.prepare(first, ports)
        ahead = await stream.prepare(second, ports, decided.ahead)
        assert [e.settlement_id for _, e in ahead.old] == [b["settlement_id"]]
        assert (await stream.finish(decided, ports)).as_decided
        # CONTRACT §5: a redelivered event never raises a flag twice, though its copy is
        # decided ahead of the batch that flagged it being written
        again = await stream.prepare([f.stream_record(topic, d)], ports, ahead.ahead)
        assert (await stream.finish(ahead, ports)).as_decided
        assert (await stream.finish(again, ports)).flags == []
    flags = await f.record_rows(
        settings.asyncpg_dsn,
        "SELECT settlement_id, trace_code, first_payment->>'settlement_id' AS first "
        "FROM flags WHERE institution_id = $1", inst)
    assert [(r["settlement_id"], r["trace_code"], r["first"]) for r in flags] == [
        (d["settlement_id"], y, b["settlement_id"])]
    on_topic = [orjson.loads(r.value) for r in await _read_topic(settings, settings.topic_flags, 1)]
    assert [flag["trace_code"] for flag in on_topic
            if flag["settlement_id"] == d["settlement_id"]] == [y]
    history = await f.history(api, admin_headers, x)
    assert sorted((event["type"], event["settlement_id"]) for event in history["events"]) == sorted(
        [("payment", a["settlement_id"]), ("reversal", a["settlement_id"]),
         ("payment", c["settlement_id"])])
    units = await f.record_rows(settings.asyncpg_dsn,
                                "SELECT sum(units) AS units FROM code_events WHERE code = $1 "
                                "AND type = 'payment'", pack)
    assert units[0]["units"] == 7


async def test_a_batch_decided_ahead_on_a_redis_behind_the_record_is_decided_again(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """Redis lost a claim the record holds (a crash between a commit and Redis): a batch
    decided ahead that carries a copy of the claiming settlement heals it once the batch
    before is finished, sees that its decisions read the healed code, and decides again,
    so the re-sale is the duplicate the record says it is."""
    inst = await f.register(api, admin_headers)
    y = f.cn20()
    b, d = (f.settlement(inst, [f.line(1, [y])]) for _ in range(2))
    topic = settings.topic_settlements
    async with StreamPorts.open(settings) as ports:
        await _recorded_but_lost_by_redis(ports, topic, b, y)
        ahead = await stream.prepare([f.stream_record(topic, body) for body in (b, d)], ports,
                                     _NOTHING_BEFORE)
        assert not (await stream.finish(ahead, ports)).as_decided
    assert await _flags_citing(settings, inst) == [(d["settlement_id"], b["settlement_id"])]


async def test_a_batch_decided_ahead_of_one_whose_heal_moves_redis_is_decided_again(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """Redis lost a claim the record holds (a crash between a commit and Redis), and the
    consumer came back with the claiming settlement's copy in one batch and a re-sale of its
    code in the next, decided ahead of the first's finish. The heal changes a code only the
    next batch read, so that batch is decided again (as the consumer's loop does when the
    one before is not as decided) and the re-sale is rejected, the duplicate the record says
    it is: one payment of the code, not a second one the arbiter could only call duplicate."""
    inst = await f.register(api, admin_headers)
    y, other = f.cn20(), f.cn20()
    b, d = (f.settlement(inst, [f.line(1, [y])]) for _ in range(2))
    c = f.settlement(inst, [f.line(1, [other])])
    topic = settings.topic_settlements
    async with StreamPorts.open(settings) as ports:
        await _recorded_but_lost_by_redis(ports, topic, b, y)
        copy = await stream.prepare([f.stream_record(topic, body) for body in (b, c)], ports,
                                    _NOTHING_BEFORE)
        resale = await stream.prepare([f.stream_record(topic, d)], ports, copy.ahead)
        assert [r.outcome for r in resale.outcome.settlements] == ["pay"]  # Redis behind
        assert not (await stream.finish(copy, ports)).as_decided
        await stream.finish(await stream.prepare([f.stream_record(topic, d)], ports), ports)
    payments = await f.record_rows(
        settings.asyncpg_dsn,
        "SELECT settlement_id, duplicate FROM code_events WHERE code = $1 AND type = 'payment'",
        y)
    assert [(r["settlement_id"], r["duplicate"]) for r in payments] == [
        (b["settlement_id"], False)]
    assert await _flags_citing(settings, inst) == [(d["settlement_id"], b["settlement_id"])]


# What a batch decided ahead of one that changed nothing is told of that one.
_NOTHING_BEFORE = stream.Ahead({}, {}, {}, set())


async def _recorded_but_lost_by_redis(
    ports: StreamPorts, topic: str, sale: dict[str, Any], code: str
) -> None:
    """The sale recorded, its claim then gone from Redis: what a crash between a commit and
    Redis leaves (a cn20 code is its own canonical form)."""
    await stream.process([f.stream_record(topic, sale)], ports)
    await ports.store.apply([ClaimEffect(Effect.RELEASE, code, owner_token(
        sale["settlement_id"], 1), 0, 0, 0, 0)], [])


async def _flags_citing(settings: Settings, institution: str) -> list[tuple[str, str]]:
    """(settlement_id, the first payment's settlement_id) of the institution's flags."""
    rows = await f.record_rows(
        settings.asyncpg_dsn,
        "SELECT settlement_id, first_payment->>'settlement_id' AS first FROM flags "
        "WHERE institution_id = $1", institution)
    return [(r["settlement_id"], r["first"]) for r in rows]


async def _published(settings: Settings, settlement_id: str) -> list[bool]:
    rows = await f.record_rows(settings.asyncpg_dsn,
                               "SELECT published FROM flags WHERE settlement_id = $1",
                               settlement_id)
    return [row["published"] for row in rows]


async def test_the_gate_publishes_what_it_accepted_with_its_decision(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
) -> None:
    """CONTRACT §5: keyed by settlement_id, `"source": "gate"`, `"decision"` the whole answer."""
    pharmacy = await f.register(api, admin_headers)
    body = f.settlement(pharmacy, [f.line(1, [f.cn20()])])
    answer = (await api.post("/v1/settlements", json=body, headers=admin_headers)).json()
    key = body["settlement_id"].encode()
    found = [r for r in await _read_topic(settings, settings.topic_settlements, 1)
             if r.key == key]
    assert len(found) == 1
    event = orjson.loads(found[0].value)
    assert (event["type"], event["source"]) == ("settlement", "gate")
    assert event["decision"] == answer
    assert event["lines"][0]["trace_codes"] == body["lines"][0]["trace_codes"]


async def test_a_settlement_without_source_is_judged_like_a_streamed_one(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    """CONTRACT §5: no `source` means it did not pass the gate: a re-used code is flagged."""
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    first = {"type": "settlement", **f.settlement(a, [f.line(1, [code])])}
    await _produce(producer, settings.topic_settlements, [first])
    await eventually(lambda: f.history(api, admin_headers, code), bool)
    again = {"type": "settlement", **f.settlement(b, [f.line(1, [code])])}
    await _produce(producer, settings.topic_settlements, [again])
    flags = await eventually(lambda: _flags(api, admin_headers, b), bool)
    assert [(fl["kind"], fl["settlement_id"]) for fl in flags] == [
        ("duplicate_payment", again["settlement_id"])]


async def test_gate_and_stream_race_on_one_fresh_code(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    producer: AIOKafkaProducer,
) -> None:
    for _ in range(5):
        a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
        code = f.cn20()
        gate_body = f.settlement(a, [f.line(1, [code])])
        stream_body = f.settlement(b, [f.line(1, [code])])
        await asyncio.gather(
            api.post("/v1/settlements", json=gate_body, headers=admin_headers),
            _produce(producer, settings.topic_settlements, [_stream(stream_body)]),
        )
        # Both settlements recorded: the loser's record holds the flag, the winner's the
        # payment, and either may be recorded first (they can land in different batches).
        history = await eventually(
            lambda code=code: f.history(api, admin_headers, code),  # type: ignore[misc]
            lambda h: h is not None and len(h["flags"]) == 1 and bool(h["events"]),
        )
        assert history is not None
        # One first payment. The loser was refused (only a flag) if it saw the winner's
        # claim; if both were paid before either claim reached Redis (a consumer applies its
        # claims there after its commit), the record's arbiter made the loser's payment a
        # duplicate: CONTRACT §3, exactly one is first and the other is the duplicate.
        [first] = [e for e in history["events"] if not e.get("duplicate")]
        assert first["type"] == "payment"
        [flag] = history["flags"]
        assert flag["kind"] == "duplicate_payment"
        assert flag["settlement_id"] != first["settlement_id"]
        assert flag["first_payment"]["settlement_id"] == first["settlement_id"]
        assert all(e["settlement_id"] == flag["settlement_id"]
                   for e in history["events"] if e.get("duplicate"))


async def test_duplicate_at_the_gate_is_on_the_sse_stream(
    api: httpx.AsyncClient, admin_headers: dict[str, str], live_api: str
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    await api.post("/v1/settlements", json=f.settlement(a, [f.line(1, [code])]),
                   headers=admin_headers)
    async with httpx.AsyncClient(base_url=live_api, headers=admin_headers, timeout=10) as http:
        async with http.stream("GET", "/v1/flags/stream", params={"institution_id": b}) as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            answer = await api.post("/v1/settlements", json=f.settlement(b, [f.line(1, [code])]),
                                    headers=admin_headers)
            [flag_id] = answer.json()["flags"]
            event = await asyncio.wait_for(_next_event(sse), 5)
    assert event["id"] == flag_id
    assert orjson.loads(event["data"])["trace_code"] == code


async def _next_event(response: httpx.Response) -> dict[str, str]:
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line and event:
            return event
        if line and not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value
    raise AssertionError("stream ended")
