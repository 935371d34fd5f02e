"""CONTRACT §4 details an integrator relies on that no other test pins: a code never settled,
a GS1 history by its percent-encoded spelling, the recorded decision, replays answered from
the record once the gate's recent answers expired, reversals that release nothing, the flag
listing's boundaries and default page, the stream's event name, concurrent identical posts,
and the docs page."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from service.kit.database import LOOKUP_POOL_NAME
from service.settings import Settings
from service.settlements import stream
from service.settlements.stream import StreamPorts
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


async def _flags(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await api.get("/v1/flags", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _duplicate(
    api: httpx.AsyncClient, headers: dict[str, str], first: str, second: str
) -> str:
    code = f.cn20()
    await f.settle(api, headers, f.settlement(first, [f.line(1, [code])]))
    [flag_id] = (await f.settle(api, headers, f.settlement(second, [f.line(1, [code])])))["flags"]
    return str(flag_id)


async def test_a_code_never_settled_is_404_code_not_seen(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await api.get(f"/v1/codes/{f.cn20()}", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "CODE_NOT_SEEN"


async def test_gs1_history_by_its_percent_encoded_parenthesised_spelling(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst = await f.register(api, admin_headers)
    serial = f.gs1_serial()
    spelled = f"(01)06901234567892(21){serial}(17)270131"
    await f.settle(api, admin_headers, f.settlement(inst, [f.line(1, [spelled])]))
    history = await eventually(lambda: f.history(api, admin_headers, spelled), bool)
    assert (history["trace_code"], history["format"]) == (f"010690123456789221{serial}", "gs1")
    assert [e["type"] for e in history["events"]] == ["payment"]


async def test_the_recorded_decision_is_the_gate_answer(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst = await f.register(api, admin_headers)
    body = f.settlement(inst, [f.line(1, [f.cn20()]), f.line(2, [])])
    answer = await f.settle(api, admin_headers, body)
    assert answer["decision"] == "partial"
    url = f"/v1/settlements/{body['settlement_id']}"
    recorded = await eventually(lambda: api.get(url, headers=admin_headers),
                                lambda response: response.status_code == 200)
    # The gate's answer as it was, and what has been reversed of it since (nothing).
    assert recorded.json() == {**answer, "reversals": []}


async def test_a_replay_after_the_recent_answer_expired_comes_from_the_record(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code])])
    answer = await f.settle(api, admin_headers, body)
    assert await eventually(lambda: f.history(api, admin_headers, code), bool)
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await redis.delete(f"tg:recent:s:{body['settlement_id']}") == 1
    finally:
        await redis.aclose()
    replay, conflict = await f.replay_and_change(api, admin_headers, body)
    assert replay.json() == {**answer, "replayed": True}
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "SETTLEMENT_CONFLICT"
    history = await f.history(api, admin_headers, code)
    assert [e["type"] for e in history["events"]] == ["payment"]  # nothing paid twice


async def test_a_streamed_settlement_is_read_and_reversed_from_the_record(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    """CONTRACT §4: `GET /v1/settlements/{id}` is the recorded decision, and a reversal
    through the gate works on any recorded settlement. One the insurer streamed never passed
    the gate, so no recent answer holds it: both read the record (the lookup pool)."""
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code])])
    async with StreamPorts.open(settings) as ports:
        await stream.process([f.stream_record(settings.topic_settlements, body)], ports)
    url = f"/v1/settlements/{body['settlement_id']}"
    recorded = await api.get(url, headers=admin_headers)
    assert recorded.status_code == 200, recorded.text
    assert (recorded.json()["settlement_id"], recorded.json()["decision"]) == (
        body["settlement_id"], "pay")
    assert recorded.json()["replayed"] is False
    reversal = await api.post(f"{url}/reversal", json={"reversal_id": f.settlement_id()},
                              headers=admin_headers)
    assert reversal.status_code == 200, reversal.text
    assert reversal.json()["released"] == [code]


async def test_lookup_connections_the_server_drops_never_answer_500(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    """The gate's settlement lookup goes through asyncpg directly (the lookup pool): a
    connection PostgreSQL ended (a restart, an administrator) is replaced, or at worst its call
    answered 503 (`tests/unit/test_error_mapping.py`); never a 500, and the next call is
    served."""
    ask = f"/v1/settlements/{f.settlement_id()}"
    assert (await api.get(ask, headers=admin_headers)).status_code == 404  # the pool connects
    ended = await f.record_rows(
        settings.asyncpg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        LOOKUP_POOL_NAME)
    assert ended
    assert all(row[0] for row in ended)
    statuses = [(await api.get(ask, headers=admin_headers)).status_code for _ in range(3)]
    assert set(statuses) <= {404, 503}, statuses
    assert statuses[-1] == 404


async def test_reversing_reversed_or_rejected_lines_releases_nothing(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code]), f.line(2, [])])  # line 2: no code, rejected
    await f.settle(api, admin_headers, body)
    url = f"/v1/settlements/{body['settlement_id']}/reversal"

    async def reverse(line_nos: list[int]) -> Any:
        response = await api.post(url, json={"reversal_id": f.settlement_id(),
                                             "line_nos": line_nos}, headers=admin_headers)
        assert response.status_code == 200, response.text
        return response.json()["released"]

    assert await reverse([1]) == [code]
    assert await reverse([1]) == []
    assert await reverse([2]) == []


async def test_flag_listing_since_is_inclusive_until_exclusive_and_pages_hold_100(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    first, second = await f.register(api, admin_headers), await f.register(api, admin_headers)
    ids = [await _duplicate(api, admin_headers, first, second) for _ in range(101)]
    page = await eventually(lambda: _flags(api, admin_headers, institution_id=second,
                                           limit=1000), lambda p: len(p["items"]) == 101)
    assert sorted(item["flag_id"] for item in page["items"]) == sorted(ids)
    default = await _flags(api, admin_headers, institution_id=second)
    assert len(default["items"]) == 100
    assert default["next_cursor"] is not None
    flag = page["items"][0]
    at = {"institution_id": second, "limit": 1000}
    since = await _flags(api, admin_headers, since=flag["detected_at"], **at)
    until = await _flags(api, admin_headers, until=flag["detected_at"], **at)
    assert flag["flag_id"] in {item["flag_id"] for item in since["items"]}
    assert flag["flag_id"] not in {item["flag_id"] for item in until["items"]}


async def test_the_flag_stream_names_its_events_flag(
    api: httpx.AsyncClient, admin_headers: dict[str, str], live_api: str
) -> None:
    first, second = await f.register(api, admin_headers), await f.register(api, admin_headers)
    earlier = await _duplicate(api, admin_headers, first, second)
    await eventually(lambda: _flags(api, admin_headers, institution_id=second),
                     lambda page: len(page["items"]) == 1)
    later = await _duplicate(api, admin_headers, first, second)
    headers = {**admin_headers, "Last-Event-ID": earlier}
    async with httpx.AsyncClient(base_url=live_api, headers=headers, timeout=10) as http:
        params = {"institution_id": second}
        async with http.stream("GET", "/v1/flags/stream", params=params) as sse:
            event = await asyncio.wait_for(_one_event(sse), 10)
    assert event["event"] == "flag"
    assert event["id"] == later
    assert orjson.loads(event["data"])["flag_id"] == later


async def _one_event(response: httpx.Response) -> dict[str, str]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line and "data" in fields:
            return fields
        name, _, value = line.partition(": ")
        if name in ("event", "id", "data"):
            fields[name] = value
    return fields


async def test_concurrent_identical_posts_pay_once(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code])])
    answers = await asyncio.gather(*[f.settle(api, admin_headers, body) for _ in range(2)])
    assert [a["decision"] for a in answers] == ["pay", "pay"]
    assert [a["flags"] for a in answers] == [[], []]
    history = await eventually(lambda: f.history(api, admin_headers, code), bool)
    assert [e["type"] for e in history["events"]] == ["payment"]
    assert history["flags"] == []


async def test_the_docs_and_the_openapi_document_are_served(api: httpx.AsyncClient) -> None:
    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    spec = await api.get("/openapi.json")
    assert "/v1/settlements" in spec.json()["paths"]
