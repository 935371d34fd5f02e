"""No request, however malformed, gets a 500 (CONTRACT §4): hand-picked hostile values in paths,
query strings and bodies that schema-driven fuzzing rarely hits — NUL characters, instants at
the edge of the calendar, forged cursors, SQL. None of these is accepted by the gate, so
nothing reaches the settlements topic (those that would are in test_bad_events.py)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests import factories as f
from tests.hostile.support import flags_of
from tests.waiting import eventually

Headers = dict[str, str]

def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Hostile:
    method: str
    url: str
    params: dict[str, Any] | None = None
    body: Any = None
    as_regulator: bool = False


def _case(name: str, hostile: Hostile, bug: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug)] if bug else []
    return pytest.param(hostile, id=name, marks=marks)


NUL12 = "\x00" * 12
HOSTILE = [
    _case("NUL in institution name", Hostile(
        "PUT", f"/v1/institutions/{f.institution_id()}", body={
            "name": "a\x00b", "kind": "primary"})),
    _case("NUL in institution region", Hostile(
        "PUT", f"/v1/institutions/{f.institution_id()}", body={
            "name": "ab", "kind": "primary", "region": "\x00"})),
    _case("NUL in GET institution path", Hostile("GET", "/v1/institutions/%00AAAAAAAAAAA")),
    _case("NUL in GET settlement path", Hostile("GET", "/v1/settlements/%00")),
    _case("NUL in reversal path", Hostile("POST", "/v1/settlements/%00/reversal",
                                          body={"reversal_id": "R-1"})),
    _case("NUL in flags institution_id", Hostile("GET", "/v1/flags",
                                                 params={"institution_id": "\x00"})),
    _case("NUL institution in a settlement", Hostile("POST", "/v1/settlements", body=f.settlement(
        NUL12, [f.line(1, [f.cn20()])]))),
    _case("NUL institution for a pos key", Hostile("POST", "/v1/api-keys", body={
        "role": "pos", "institution_id": NUL12})),
    _case("NUL in a trace code path", Hostile("GET", "/v1/codes/%00")),
    _case("NUL in verify", Hostile("POST", "/v1/codes/verify", body={
        "institution_id": NUL12, "trace_codes": ["\x00"]}, as_regulator=True)),
    _case("flags since year 1", Hostile("GET", "/v1/flags", params={
        "since": "0001-01-01T00:00:00+08:00"})),
    _case("flags until past 9999 in UTC", Hostile("GET", "/v1/flags", params={
        "until": "9999-12-31T23:59:59-10:00"})),
    _case("cursor in year 1", Hostile("GET", "/v1/flags", params={
        "cursor": cursor("0001-01-01T00:00:00+08:00|1")})),
    _case("cursor seq over int64", Hostile("GET", "/v1/flags", params={
        "cursor": cursor("2025-01-01T00:00:00+00:00|" + "9" * 30)})),
    _case("cursor without an offset", Hostile("GET", "/v1/flags", params={
        "cursor": cursor("2025-01-01T00:00:00|1")})),
    _case("SQL in a settlement path", Hostile("GET", "/v1/settlements/x'%20OR%20'1'='1")),
    _case("SQL in flags institution_id", Hostile("GET", "/v1/flags", params={
        "institution_id": "' OR ''='"})),
    _case("SQL in a trace code", Hostile("GET", "/v1/codes/8'%3B%20DROP%20TABLE%20flags--")),
    _case("path traversal in a trace code", Hostile("GET", "/v1/codes/..%2F..%2Fetc%2Fpasswd")),
    _case("a 300-character trace code", Hostile("GET", "/v1/codes/" + "8" * 300)),
    _case("a 100-character settlement id", Hostile("GET", "/v1/settlements/" + "S" * 100)),
    _case("a 100-character institution id", Hostile("GET", "/v1/institutions/" + "A" * 100)),
    _case("non-ASCII settlement id", Hostile("POST", "/v1/settlements", body={
        **f.settlement(f.institution_id(), [f.line(1, [])]), "settlement_id": "S-\u00e9\u4e2d"})),
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_no_hostile_request_gets_a_500(
    hostile: Hostile, api: httpx.AsyncClient, admin_headers: Headers,
    tolerant_api: httpx.AsyncClient,
) -> None:
    headers = (await f.key_for(api, admin_headers, "regulator") if hostile.as_regulator
               else admin_headers)
    response = await tolerant_api.request(hostile.method, hostile.url, params=hostile.params,
                                          json=hostile.body, headers=headers)
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.usefixtures("consumer")
async def test_sql_in_a_filter_matches_nothing(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    """Filters are bound parameters: a quote-laden institution_id is a value, not SQL, so it
    matches no flag even though flags exist."""
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    for institution in (a, b):
        await api.post("/v1/settlements", json=f.settlement(institution, [f.line(1, [code])]),
                       headers=admin_headers)
    flagged = await eventually(lambda: flags_of(api, admin_headers, b), bool)
    assert flagged, "control: the duplicate was flagged"
    response = await api.get("/v1/flags", params={"institution_id": "' OR '1'='1"},
                             headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
