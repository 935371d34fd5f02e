"""The gate against the real embedded stack: decisions, claims, replays, reversals, verify."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from loadtest.gatetruth import settled_now
from service.api.clients import Clients
from service.api.limits import InFlightLimit
from service.firstseen.rebuild import REBUILT_AT_KEY
from service.firstseen.store import FirstSeenStore, GateRead
from tests import factories as f

pytestmark = pytest.mark.usefixtures("consumer")


@pytest.fixture
async def pharmacy(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> str:
    return await f.register(api, admin_headers)


@pytest.fixture
async def pos(
    api: httpx.AsyncClient, admin_headers: dict[str, str], pharmacy: str
) -> dict[str, str]:
    return await f.key_for(api, admin_headers, "pos", pharmacy)


async def test_first_payment_then_duplicate_across_institutions(
    api: httpx.AsyncClient, admin_headers: dict[str, str], pharmacy: str, pos: dict[str, str]
) -> None:
    code = f.cn20()
    first = f.settlement(pharmacy, [f.line(1, [code])])
    answer = await f.settle(api, pos, first)
    assert (answer["decision"], answer["enforced"], answer["replayed"]) == ("pay", True, False)
    other = await f.register(api, admin_headers)
    second = await f.settle(api, admin_headers, f.settlement(other, [f.line(1, [code])]))
    assert second["decision"] == "reject"
    [reason] = second["lines"][0]["reasons"]
    assert (reason["code"], reason["severity"], reason["trace_code"]) == (
        "DUPLICATE_PAYMENT", "error", code)
    assert reason["first_payment"]["settlement_id"] == first["settlement_id"]
    assert reason["first_payment"]["institution_id"] == pharmacy
    assert len(second["flags"]) == 1


async def test_replay_returns_the_same_answer_and_a_changed_body_conflicts(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    body = f.settlement(pharmacy, [f.line(1, [f.cn20()])])
    answer = await f.settle(api, pos, body)
    again, changed = await f.replay_and_change(api, pos, body)
    assert again.json() == {**answer, "replayed": True}
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "SETTLEMENT_CONFLICT"


async def test_partial_decision_and_rejected_line_claims_nothing(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    good, fresh = f.cn20(), f.cn20()
    body = f.settlement(pharmacy, [f.line(1, [good]), f.line(2, [fresh], quantity=2)])
    answer = await f.settle(api, pos, body)
    assert answer["decision"] == "partial"
    assert answer["lines"][1]["reasons"][0]["code"] == "QUANTITY_MISMATCH"
    status = await _verify(api, pos, pharmacy, [good, fresh])
    assert [r["status"] for r in status] == ["paid", "unpaid"]


async def _verify(
    api: httpx.AsyncClient, headers: dict[str, str], institution: str, codes: list[str]
) -> list[dict[str, Any]]:
    body = {"institution_id": institution, "trace_codes": codes}
    response = await api.post("/v1/codes/verify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _in_flight_limit(app: FastAPI) -> InFlightLimit:
    """The app's in-flight limit, found down the middleware stack it has built."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, InFlightLimit):
        layer = layer.app
    return layer


async def test_a_shed_settlement_is_a_503_that_claims_nothing(
    api: httpx.AsyncClient, app: FastAPI, pos: dict[str, str], pharmacy: str
) -> None:
    """CONTRACT §4: a gate that cannot answer answers 503 and keeps no claim. At capacity the
    call is refused before it is decided; the same settlement retried later is paid, new."""
    code = f.cn20()
    body = f.settlement(pharmacy, [f.line(1, [code])])
    limit = _in_flight_limit(app)
    room = limit.bound.bound
    limit.in_flight += room  # the process at capacity
    try:
        shed = await api.post("/v1/settlements", json=body, headers=pos)
    finally:
        limit.in_flight -= room
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["error"]["code"] == "OVERLOADED"
    [status] = await _verify(api, pos, pharmacy, [code])
    assert status["status"] == "unpaid"
    answer = await f.settle(api, pos, body)
    assert (answer["decision"], answer["replayed"]) == ("pay", False)


async def test_before_go_live_findings_are_warnings_and_paid(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    body = f.settlement(pharmacy, [f.line(1, [])], settled_at="2025-03-31T23:59:59+08:00")
    answer = await f.settle(api, pos, body)
    assert (answer["decision"], answer["enforced"]) == ("pay", False)
    assert answer["lines"][0]["reasons"] == [
        {"code": "MISSING_TRACE_CODE", "severity": "warning", "message": "no trace code"}]
    at_go_live = f.settlement(pharmacy, [f.line(1, [])], settled_at="2025-03-31T16:00:00Z")
    assert (await f.settle(api, pos, at_go_live))["decision"] == "reject"


@pytest.mark.parametrize(
    ("kind", "last_free", "first_enforced"),
    [("primary", "2025-04-30 23:59:59", "2025-05-01 00:00:00"),
     ("secondary", "2025-05-31 23:59:59", "2025-06-01 00:00:00"),
     ("tertiary", "2025-05-31T15:59:59Z", "2025-05-31T16:00:00Z")],
)
async def test_go_live_per_kind(
    api: httpx.AsyncClient, admin_headers: dict[str, str], kind: str, last_free: str,
    first_enforced: str,
) -> None:
    hospital = await f.register(api, admin_headers, kind)
    free = await f.settle(api, admin_headers, f.settlement(hospital, [f.line(1, [])],
                                                           settled_at=last_free))
    enforced = await f.settle(api, admin_headers, f.settlement(hospital, [f.line(1, [])],
                                                               settled_at=first_enforced))
    assert (free["enforced"], enforced["enforced"]) == (False, True)


async def test_invalid_code_and_exemptions(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    body = f.settlement(pharmacy, [
        f.line(1, ["12345678901234567890"]),
        f.line(2, [], no_code_reason="herbal_granules"),
        f.line(3, [], no_code_reason="legacy_stock"),
    ], settled_at="2026-01-01 00:00:00")
    answer = await f.settle(api, pos, body)
    codes = [[r["code"] for r in line["reasons"]] for line in answer["lines"]]
    assert codes == [["INVALID_TRACE_CODE"], ["EXEMPT"], ["MISSING_TRACE_CODE"]]
    assert answer["lines"][1]["decision"] == "pay"


async def test_unknown_exemption_reason_is_a_422(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    body = f.settlement(pharmacy, [f.line(1, [], no_code_reason="forgot")])
    response = await api.post("/v1/settlements", json=body, headers=pos)
    assert response.status_code == 422
    assert "no_code_reason" in response.json()["error"]["message"]


async def test_unknown_institution_is_a_422(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = f.settlement(f.institution_id("Z"), [f.line(1, [f.cn20()])])
    response = await api.post("/v1/settlements", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "UNKNOWN_INSTITUTION"


async def test_split_pack_accounting(
    api: httpx.AsyncClient, admin_headers: dict[str, str], pos: dict[str, str], pharmacy: str
) -> None:
    code = f.cn20()
    split = [f.line(1, [code], split=True, quantity=6, pack_size=10)]
    assert (await f.settle(api, pos, f.settlement(pharmacy, split)))["decision"] == "pay"
    [status] = await _verify(api, pos, pharmacy, [code])
    assert (status["status"], status["units_left"]) == ("split_open", 4)
    more = [f.line(1, [code], split=True, quantity=4, pack_size=10)]
    assert (await f.settle(api, pos, f.settlement(pharmacy, more)))["decision"] == "pay"
    over = await f.settle(api, pos, f.settlement(pharmacy, split))
    assert over["lines"][0]["reasons"][0]["code"] == "SPLIT_OVERUSE"
    other = await f.register(api, admin_headers)
    cross = await f.settle(api, admin_headers, f.settlement(other, [
        f.line(1, [code], split=True, quantity=1, pack_size=10)]))
    assert cross["lines"][0]["reasons"][0]["code"] == "SPLIT_CROSS_INSTITUTION"
    whole = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])]))
    assert whole["lines"][0]["reasons"][0]["code"] == "SPLIT_OVERUSE"


async def test_reversal_releases_and_allows_resale(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    code = f.cn20()
    body = f.settlement(pharmacy, [f.line(1, [code])])
    await f.settle(api, pos, body)
    url = f"/v1/settlements/{body['settlement_id']}/reversal"
    reversal = {"reversal_id": f.settlement_id(), "line_nos": [1]}
    response = await api.post(url, json=reversal, headers=pos)
    assert response.status_code == 200, response.text
    assert response.json() == {"settlement_id": body["settlement_id"],
                               "reversal_id": reversal["reversal_id"], "released": [code],
                               "replayed": False}
    again = await api.post(url, json=reversal, headers=pos)
    assert again.json() == {**response.json(), "replayed": True}
    conflict = await api.post(url, json={**reversal, "line_nos": None}, headers=pos)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "REVERSAL_CONFLICT"
    resale = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])]))
    assert resale["decision"] == "pay", resale["lines"]


async def test_reversal_of_unknown_settlement_is_404(
    api: httpx.AsyncClient, pos: dict[str, str]
) -> None:
    response = await api.post("/v1/settlements/S-NOPE/reversal",
                              json={"reversal_id": "R-1"}, headers=pos)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SETTLEMENT_NOT_FOUND"


async def test_verify_changes_nothing_and_reports_formats(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    special = "89" + f.cn20()[2:]
    gs1 = "(01)06901234567892(21)" + f.settlement_id()[-8:].upper().replace("-", "")
    results = await _verify(api, pos, pharmacy, [special, gs1, "nonsense!"])
    assert [r["format"] for r in results] == ["cn20", "gs1", None]
    assert results[0]["special_control"] is True
    assert results[0]["product_id"] == special[:7]
    assert results[1]["product_id"] == "06901234567892"
    assert results[2]["valid"] is False
    assert results[2]["reason"]
    again = await _verify(api, pos, pharmacy, [special])
    assert again[0]["status"] == "unpaid"


async def test_a_settlement_dated_ahead_of_the_gate_clock_is_refused(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str
) -> None:
    """A POS settles now: a settled_at an hour ahead is a mistake, refused in words, and
    nothing is claimed (the same code pays at once after)."""
    import datetime as dt

    code = f.cn20()
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    refused = await api.post("/v1/settlements", headers=pos, json=f.settlement(
        pharmacy, [f.line(1, [code])], settled_at=ahead))
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith("settled_at: ")
    assert "ahead of the gate's clock" in refused.json()["error"]["message"]
    paid = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])]))
    assert paid["decision"] == "pay"


async def test_an_institution_changed_reaches_the_gate_at_once(
    api: httpx.AsyncClient, pos: dict[str, str], pharmacy: str, admin_headers: dict[str, str],
) -> None:
    """The gate keeps institutions in memory for minutes, yet a go-live moved by PUT decides
    the very next settlement: before go-live a duplicate is only a warning and paid."""
    code = f.cn20()
    assert (await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])])))[
        "decision"] == "pay"
    refused = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])]))
    assert refused["decision"] == "reject"  # enforced: the institution is cached now
    later = {"name": "moved", "kind": "retail_pharmacy", "region": "110105",
             "go_live_override": "2099-01-01"}
    moved = await api.put(f"/v1/institutions/{pharmacy}", json=later, headers=admin_headers)
    assert moved.status_code == 200, moved.text
    warned = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [code])]))
    assert warned["enforced"] is False
    assert warned["decision"] == "pay"


@pytest.fixture
async def rebuilt_long_ago(app: FastAPI) -> AsyncIterator[None]:
    """The last rebuild an hour past, as in service. Other tests of this session rebuild the
    first-seen set, and a settlement settled within minutes of a rebuild may have been decided
    before it: the gate asks the record of those (see gate._may_be_recorded)."""
    redis = app.state.clients.redis
    before = await redis.get(REBUILT_AT_KEY)
    await redis.set(REBUILT_AT_KEY, int((time.time() - 3600) * 1000))
    yield
    await redis.set(REBUILT_AT_KEY, before if before is not None else 0)


@pytest.mark.usefixtures("rebuilt_long_ago")
async def test_a_new_settlement_of_unpaid_codes_is_one_round_trip_to_redis(
    api: httpx.AsyncClient, app: FastAPI, admin_headers: dict[str, str], pos: dict[str, str],
    pharmacy: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the gate has read the institutions' version and the last rebuild, a settlement
    of codes never paid is claimed without reading them first; a paid code among them, or
    an institution changed since, still takes the full read (and is decided right). Settled
    now: one settled long ago may have been decided before its recent answer expired, and
    always has the record asked."""
    now = settled_now()
    await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [f.cn20()])], settled_at=now))
    clients: Clients = app.state.clients
    reads: list[list[str]] = []
    full_read = FirstSeenStore.read_for_gate

    async def counted(store: FirstSeenStore, codes: list[str], keys: list[str]) -> GateRead:
        reads.append(list(codes))
        return await full_read(store, codes, keys)

    monkeypatch.setattr(clients.store, "read_for_gate", counted.__get__(clients.store))
    paid = f.cn20()
    assert (await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [paid])], settled_at=now)))[
        "decision"] == "pay"
    one_trip = clients.store.takes_guards  # on a Redis Cluster every call reads first
    assert reads == ([] if one_trip else [[paid]])
    again = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [paid])], settled_at=now))
    assert again["lines"][0]["reasons"][0]["code"] == "DUPLICATE_PAYMENT"
    assert reads == [[paid]] * (1 if one_trip else 2)
    moved = {"name": "moved", "kind": "retail_pharmacy", "region": "110105",
             "go_live_override": "2099-01-01"}
    assert (await api.put(f"/v1/institutions/{pharmacy}", json=moved,
                          headers=admin_headers)).status_code == 200
    fresh = f.cn20()
    later = await f.settle(api, pos, f.settlement(pharmacy, [f.line(1, [fresh])], settled_at=now))
    assert later["enforced"] is False  # the change was seen, though the cache held the old
    assert reads == [[paid]] * (1 if one_trip else 2) + [[fresh]]
