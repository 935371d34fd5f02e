"""The rest of CONTRACT §4: flag listing and stream resume, institutions, keys, health,
metrics, split reversal, stream reversals, one pack in two spellings."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.settings import Settings
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


async def _duplicates(
    api: httpx.AsyncClient, headers: dict[str, str], count: int
) -> tuple[str, list[str]]:
    """`count` duplicate flags at one fresh institution; returns it and the flag ids."""
    first, second = await f.register(api, headers), await f.register(api, headers)
    ids = []
    for _ in range(count):
        code = f.cn20()
        await f.settle(api, headers, f.settlement(first, [f.line(1, [code])]))
        ids += (await f.settle(api, headers, f.settlement(second, [f.line(1, [code])])))["flags"]
    return second, ids


async def _page(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await api.get("/v1/flags", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_flag_pages_filters_and_limits(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst, ids = await _duplicates(api, admin_headers, 5)
    await eventually(lambda: _page(api, admin_headers, institution_id=inst),
                     lambda page: len(page["items"]) == 5)
    seen, cursor = [], None
    while True:
        params = {"institution_id": inst, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await _page(api, admin_headers, **params)
        seen += [item["flag_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert (await _page(api, admin_headers, institution_id=inst, kind="missing_code"))[
        "items"] == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert (await _page(api, admin_headers, institution_id=inst, since=future))["items"] == []
    assert len((await _page(api, admin_headers, institution_id=inst, until=future))[
        "items"]) == 5
    for bad in ({"limit": 1001}, {"limit": 0}, {"cursor": "garbage"}):
        assert (await api.get("/v1/flags", params=bad, headers=admin_headers)).status_code == 422


async def test_flag_stream_resumes_after_last_event_id(
    api: httpx.AsyncClient, admin_headers: dict[str, str], live_api: str
) -> None:
    """Resume after a flag recorded earlier: exactly the later ones follow (the stream's
    order is the record's commit order, not detection order)."""
    inst, [seen] = await _duplicates(api, admin_headers, 1)
    await eventually(lambda: _page(api, admin_headers, institution_id=inst),
                     lambda page: len(page["items"]) == 1)
    later_inst, later = await _duplicates(api, admin_headers, 2)
    headers = {**admin_headers, "Last-Event-ID": seen}
    async with httpx.AsyncClient(base_url=live_api, headers=headers, timeout=10) as http:
        params = {"institution_id": later_inst}
        async with http.stream("GET", "/v1/flags/stream", params=params) as sse:
            got = await asyncio.wait_for(_ids(sse, 2), 10)
    assert sorted(got) == sorted(later)


async def _ids(response: httpx.Response, count: int) -> list[str]:
    found: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            found.append(line[4:])
            if len(found) == count:
                return found
    return found


async def test_institution_view_counts_and_go_live(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst, _ = await _duplicates(api, admin_headers, 1)
    body = {"name": "二级医院", "kind": "secondary", "region": "110105",
            "go_live_override": "2025-07-01"}
    put = await api.put(f"/v1/institutions/{inst}", json=body, headers=admin_headers)
    assert put.status_code == 200
    assert put.json()["effective_go_live"] == "2025-07-01T00:00:00+08:00"
    view = await eventually(
        lambda: api.get(f"/v1/institutions/{inst}", headers=admin_headers),
        lambda r: r.json()["counts"]["flags"] == {"duplicate_payment": 1},
    )
    assert view.json()["counts"] == {"payments": 0, "flags": {"duplicate_payment": 1}}
    assert (await api.get("/v1/institutions/NOSUCHINST01", headers=admin_headers)
            ).status_code == 404
    bad = await api.put("/v1/institutions/short", json=body, headers=admin_headers)
    assert bad.status_code == 422


async def test_api_keys_are_shown_once_and_work(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await api.post("/v1/api-keys", json={"role": "ops"}, headers=admin_headers)
    assert response.status_code == 201
    key = response.json()["key"]
    ops = {"Authorization": f"Bearer {key}"}
    assert (await api.get("/v1/flags", headers=ops)).status_code == 200
    missing = await api.post("/v1/api-keys", json={"role": "pos"}, headers=admin_headers)
    assert missing.status_code == 422
    unknown = await api.post("/v1/api-keys", json={"role": "pos",
                                                   "institution_id": "NOSUCHINST01"},
                             headers=admin_headers)
    assert unknown.json()["error"]["code"] == "UNKNOWN_INSTITUTION"


async def test_health_readiness_and_metrics(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "postgres": "ok", "kafka": "ok"}
    metrics = await api.get("/metrics")
    assert "# TYPE tracegate_gate_request_seconds histogram" in metrics.text


async def test_split_reversal_gives_units_back(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst, code = await f.register(api, admin_headers), f.cn20()
    sale = f.settlement(inst, [f.line(1, [code], split=True, quantity=7, pack_size=10)])
    await f.settle(api, admin_headers, sale)
    reversal = await api.post(f"/v1/settlements/{sale['settlement_id']}/reversal",
                              json={"reversal_id": f.settlement_id()}, headers=admin_headers)
    assert reversal.json()["released"] == [code]
    ten = f.settlement(inst, [f.line(1, [code], split=True, quantity=10, pack_size=10)])
    assert (await f.settle(api, admin_headers, ten))["decision"] == "pay"


async def test_one_pack_in_two_spellings_is_one_code(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst = await f.register(api, admin_headers)
    serial = f.gs1_serial()
    raw = f"]d2010690123456789221{serial}\x1d17270131"
    parenthesised = f"(17)270131(01)06901234567892(21){serial}\r\n"
    await f.settle(api, admin_headers, f.settlement(inst, [f.line(1, [raw])]))
    again = await f.settle(api, admin_headers, f.settlement(inst, [f.line(1, [parenthesised])]))
    reason = again["lines"][0]["reasons"][0]
    assert (reason["code"], reason["trace_code"]) == (
        "DUPLICATE_PAYMENT", f"0106901234567892" f"21{serial}")


async def test_reversal_streamed_by_the_insurer(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    inst, code = await f.register(api, admin_headers), f.cn20()
    sale = f.settlement(inst, [f.line(1, [code])])
    reversal = {"type": "reversal", "settlement_id": sale["settlement_id"],
                "reversal_id": f.settlement_id(), "line_nos": [1]}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        for event in ({"type": "settlement", "source": "stream", **sale}, reversal, reversal):
            await producer.send_and_wait(settings.topic_settlements, orjson.dumps(event),
                                         key=sale["settlement_id"].encode())
    finally:
        await producer.stop()
    history = await eventually(
        lambda: api.get(f"/v1/codes/{code}", headers=admin_headers),
        lambda r: r.status_code == 200 and len(r.json()["events"]) == 2,
    )
    events = history.json()["events"]
    assert [e["type"] for e in events] == ["payment", "reversal"]
    assert events[1]["reversal_id"] == reversal["reversal_id"]
    assert history.json()["status"] == "unpaid"


async def test_duplicate_paid_before_go_live_is_a_duplicate_payment_event(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """Before go-live a duplicate is paid (warning) and flagged; it never takes the claim."""
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    early = "2025-03-01 09:00:00"
    await f.settle(api, admin_headers, f.settlement(a, [f.line(1, [code])], settled_at=early))
    again = f.settlement(b, [f.line(1, [code])], settled_at=early)
    answer = await f.settle(api, admin_headers, again)
    assert (answer["decision"], answer["lines"][0]["reasons"][0]["severity"]) == (
        "pay", "warning")
    history = await eventually(
        lambda: api.get(f"/v1/codes/{code}", headers=admin_headers),
        lambda r: r.status_code == 200 and len(r.json()["events"]) == 2,
    )
    duplicate = {e["settlement_id"]: e.get("duplicate", False) for e in history.json()["events"]}
    assert duplicate[again["settlement_id"]] is True  # same settled_at: order is not defined
    assert sorted(duplicate.values()) == [False, True]
    assert len(history.json()["flags"]) == 1
