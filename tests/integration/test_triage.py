"""Flag triage (CONTRACT §7) against the real servers: flags raised by two gate settlements of
one code, recorded by the session's consumer, then worked as cases through the API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from service.settings import Settings
from tests import factories as f
from tests.integration.test_stream import _next_event, _read_topic
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")

Headers = dict[str, str]


async def _mint(api: httpx.AsyncClient, admin: Headers, role: str) -> tuple[int, Headers]:
    response = await api.post("/v1/api-keys", json={"role": role}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()["key_id"], {"Authorization": f"Bearer {response.json()['key']}"}


async def _recorded_flag(
    api: httpx.AsyncClient, admin: Headers, first_at: str, again_at: str, code: str | None = None
) -> tuple[str, str]:
    """A duplicate payment flag at `again_at` of a code first paid at `first_at`, once the
    record holds it: (flag_id, code)."""
    code = code or f.cn20()
    await f.settle(api, admin, f.settlement(first_at, [f.line(1, [code])]))
    answer = await f.settle(api, admin, f.settlement(again_at, [f.line(1, [code])]))
    [flag_id] = answer["flags"]

    async def status() -> int:
        return (await api.get(f"/v1/flags/{flag_id}", headers=admin)).status_code

    assert await eventually(status, lambda s: s == 200) == 200
    return flag_id, code


async def _patch(
    api: httpx.AsyncClient, headers: Headers, flag_id: str, **body: Any
) -> httpx.Response:
    return await api.patch(f"/v1/flags/{flag_id}", json=body, headers=headers)


async def test_a_case_is_worked_from_new_to_closed_and_reopened(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    flag_id, code = await _recorded_flag(api, admin_headers, a, b)
    ops_id, ops = await _mint(api, admin_headers, "ops")
    regulator_id, regulator = await _mint(api, admin_headers, "regulator")

    fresh = (await api.get(f"/v1/flags/{flag_id}", headers=ops)).json()
    assert (fresh["status"], fresh["resolution"], fresh["history"]) == ("new", None, [])
    assert fresh["kind"] == "duplicate_payment"
    assert fresh["trace_code"] == code
    assert [(p["type"], p["institution_id"]) for p in fresh["payments"]] == [("payment", a)]
    assert fresh["payments"][0]["recorded_at"]

    skipped = await _patch(api, ops, flag_id, status="escalated")
    assert skipped.status_code == 409
    assert skipped.json()["error"]["code"] == "INVALID_TRANSITION"
    unresolved = await _patch(api, ops, flag_id, status="closed")
    assert unresolved.status_code == 422
    assert "resolution" in unresolved.json()["error"]["message"]

    steps = [({"status": "investigating", "note": "asked the pharmacy"}, ops),
             ({"status": "escalated"}, regulator),
             ({"status": "closed", "resolution": "legitimate", "note": "a return"}, ops),
             ({"status": "investigating", "note": "the return was not found"}, regulator)]
    for body, headers in steps:
        answer = await _patch(api, headers, flag_id, **body)
        assert answer.status_code == 200, answer.text
    case = answer.json()
    assert (case["status"], case["resolution"]) == ("investigating", None)
    assert [(h["status"], h.get("resolution"), h["note"], h["by"]) for h in case["history"]] == [
        ("investigating", None, "asked the pharmacy", {"key_id": ops_id, "role": "ops"}),
        ("escalated", None, None, {"key_id": regulator_id, "role": "regulator"}),
        ("closed", "legitimate", "a return", {"key_id": ops_id, "role": "ops"}),
        ("investigating", None, "the return was not found",
         {"key_id": regulator_id, "role": "regulator"}),
    ]
    assert case["updated_at"] >= fresh["updated_at"]
    # The detection itself never changes; no key ever appears in a case.
    detection = ("kind", "trace_code", "settlement_id", "detected_at", "first_payment")
    assert {k: case[k] for k in detection} == {k: fresh[k] for k in detection}
    keys = (ops["Authorization"], regulator["Authorization"])
    assert not any(key.removeprefix("Bearer ") in answer.text for key in keys)


async def test_a_closed_case_only_reopens_and_a_resolution_is_only_for_closing(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    flag_id, _ = await _recorded_flag(api, admin_headers, a, b)
    early = await _patch(api, admin_headers, flag_id, status="investigating",
                         resolution="data_error")
    assert early.status_code == 422
    closed = await _patch(api, admin_headers, flag_id, status="closed",
                          resolution="confirmed_fraud")
    assert closed.json()["resolution"] == "confirmed_fraud"
    for status in ("closed", "escalated", "new"):
        body = {"status": status, "resolution": "data_error"} if status == "closed" else {
            "status": status}
        again = await _patch(api, admin_headers, flag_id, **body)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "INVALID_TRANSITION")


async def test_unknown_flags_and_callers_who_may_not_triage(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    pharmacy = await f.register(api, admin_headers)
    pos = await f.key_for(api, admin_headers, "pos", pharmacy)
    for flag_id in ("fl_" + "0" * 32, "not-a-flag", "fl_%00"):
        missing = await api.get(f"/v1/flags/{flag_id}", headers=admin_headers)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "FLAG_NOT_FOUND")
        patched = await _patch(api, admin_headers, flag_id, status="investigating")
        assert patched.status_code == 404
    refused = await _patch(api, pos, "fl_" + "0" * 32, status="investigating")
    assert refused.status_code == 403
    bad = await _patch(api, admin_headers, "fl_" + "0" * 32, status="done")
    assert bad.status_code == 422


async def test_status_filter_and_case_summaries(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    ids = [(await _recorded_flag(api, admin_headers, a, b))[0] for _ in range(4)]
    closing = {ids[0]: "legitimate", ids[1]: "confirmed_fraud", ids[2]: "legitimate"}
    for flag_id, resolution in closing.items():
        answer = await _patch(api, admin_headers, flag_id, status="closed", resolution=resolution)
        assert answer.status_code == 200, answer.text
    await _patch(api, admin_headers, ids[2], status="investigating")  # reopened

    async def listed(*statuses: str) -> list[str]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("institution_id", b), *(("status", s) for s in statuses)]
        page = await api.get("/v1/flags", params=params, headers=admin_headers)
        assert page.status_code == 200, page.text
        return [item["flag_id"] for item in page.json()["items"]]

    assert sorted(await listed("closed")) == sorted(ids[:2])
    assert sorted(await listed("new", "investigating")) == sorted(ids[2:])
    assert sorted(await listed()) == sorted(ids)
    assert (await api.get("/v1/flags", params={"status": "done"},
                          headers=admin_headers)).status_code == 422

    institution = (await api.get(f"/v1/institutions/{b}", headers=admin_headers)).json()
    assert institution["counts"]["flags"] == {"duplicate_payment": 4}  # the contract's keys
    cases = institution["cases"]
    assert (cases["open"], cases["closed"]) == (2, 2)
    assert cases["open_by_status"] == {"new": 1, "investigating": 1, "escalated": 0}
    assert cases["open_by_age"] == {"under_1d": 2, "from_1d_to_7d": 0, "from_7d_to_30d": 0,
                                    "over_30d": 0}
    assert cases["closed_by_resolution"] == {"confirmed_fraud": 1, "legitimate": 1,
                                             "data_error": 0}
    assert cases["false_alert_rate"] == 0.5
    ops = await f.key_for(api, admin_headers, "ops")
    overall = (await api.get("/v1/flags/summary", headers=ops)).json()
    assert overall["open"] >= 2
    assert overall["closed"] >= 2
    one = (await api.get("/v1/flags/summary", params={"institution_id": b}, headers=ops)).json()
    assert one == cases
    empty = (await api.get(f"/v1/institutions/{a}", headers=admin_headers)).json()["cases"]
    assert (empty["open"], empty["false_alert_rate"]) == (0, None)


async def test_the_stream_filters_on_status_and_the_topic_carries_only_detections(
    api: httpx.AsyncClient, admin_headers: Headers, live_api: str, settings: Settings
) -> None:
    """Resuming after a flag, with status=investigating: the first event is the third flag,
    so the second (still new, and before it in the stream) was filtered out."""
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    first, code = await _recorded_flag(api, admin_headers, a, b)
    second, _ = await _recorded_flag(api, admin_headers, a, b, code)
    third, _ = await _recorded_flag(api, admin_headers, a, b, code)
    await _patch(api, admin_headers, third, status="investigating")
    headers = {**admin_headers, "Last-Event-ID": first}
    params = {"institution_id": b, "status": "investigating"}
    async with httpx.AsyncClient(base_url=live_api, headers=headers, timeout=10) as http:
        async with http.stream("GET", "/v1/flags/stream", params=params) as sse:
            event = await asyncio.wait_for(_next_event(sse), 5)
    assert event["id"] == third
    assert orjson.loads(event["data"])["status"] == "investigating"
    on_topic = [orjson.loads(r.value) for r in await _read_topic(settings, settings.topic_flags, 1)]
    ours = [flag for flag in on_topic if flag["flag_id"] in {first, second, third}]
    assert len(ours) == 3
    assert all({"status", "resolution", "updated_at"}.isdisjoint(flag) for flag in ours)
