"""Bodies the API must refuse before doing any work (CONTRACT §4): over TRACEGATE_MAX_BODY_BYTES
→ 413, whether the length is declared or the body is chunked; absurd line and code counts → 413
or 422 with nothing recorded and nothing claimed; malformed JSON → 422; wrong types → 422
naming the field. Every refusal carries the contract's `{"error": {"code", "message"}}`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from service.settings import Settings
from tests import factories as f

Headers = dict[str, str]
Json = dict[str, Any]


@dataclass
class Site:
    """An institution with a pos key and a paid settlement (for reversal cases)."""

    institution: str
    pos: Headers
    regulator: Headers
    paid_settlement: str
    paid_code: str


@pytest.fixture(scope="module")
async def site(api: httpx.AsyncClient, admin_headers: Headers) -> Site:
    institution = await f.register(api, admin_headers)
    pos = await f.key_for(api, admin_headers, "pos", institution)
    regulator = await f.key_for(api, admin_headers, "regulator")
    code = f.cn20()
    body = f.settlement(institution, [f.line(1, [code])])
    answer = await api.post("/v1/settlements", json=body, headers=pos)
    assert answer.json()["decision"] == "pay", answer.text
    return Site(institution, pos, regulator, body["settlement_id"], code)


async def status_of(api: httpx.AsyncClient, site: Site, code: str) -> str:
    body = {"institution_id": site.institution, "trace_codes": [code]}
    response = await api.post("/v1/codes/verify", json=body, headers=site.regulator)
    assert response.status_code == 200, response.text
    status: str = response.json()["results"][0]["status"]
    return status


def assert_error_body(response: httpx.Response, status: int) -> Json:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error: Json = response.json()["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return error


# --- over the byte limit ---------------------------------------------------------------------

async def _chunks(body: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


@pytest.mark.parametrize("over", ["in-process", "socket"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_oversized_body_is_413_before_any_work(
    framing: str, over: str, site: Site, settings: Settings, live_api: str,
    tolerant_api: httpx.AsyncClient,
) -> None:
    code = f.cn20()
    body = f.settlement(site.institution, [f.line(1, [code])])
    raw = orjson.dumps({**body, "padding": "x" * settings.max_body_bytes})
    headers = {**site.pos, "content-type": "application/json"}
    content: bytes | AsyncIterator[bytes] = raw if framing == "content-length" else _chunks(raw)
    if over == "socket":
        async with httpx.AsyncClient(base_url=live_api, timeout=30) as http:
            response = await http.post("/v1/settlements", content=content, headers=headers)
    else:
        response = await tolerant_api.post("/v1/settlements", content=content, headers=headers)
    assert ("content-length" in response.request.headers) == (framing == "content-length")
    assert_error_body(response, 413)
    assert await status_of(tolerant_api, site, code) == "unpaid"
    found = await tolerant_api.get(f"/v1/settlements/{body['settlement_id']}", headers=site.pos)
    assert found.status_code == 404


# --- absurd counts -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Absurd:
    name: str
    build: Callable[[Site, str], tuple[str, str, Json]]  # site, fresh code -> method, url, body
    statuses: frozenset[int]
    field: str | None = None  # the field a 422 must name


def _settlement(site: Site, code: str, lines: int = 1, codes: int = 1, **extra: Any) -> Json:
    first = f.line(1, [code] + [f.cn20() for _ in range(codes - 1)])
    rest = [{"line_no": n, "drug_code": "D", "quantity": 1, "trace_codes": []}
            for n in range(2, lines + 1)]
    return {**f.settlement(site.institution, [first, *rest]), **extra}


def _gate(**shape: Any) -> Callable[[Site, str], tuple[str, str, Json]]:
    return lambda site, code: ("POST", "/v1/settlements", _settlement(site, code, **shape))


def _line_field(**fields: Any) -> Callable[[Site, str], tuple[str, str, Json]]:
    def build(site: Site, code: str) -> tuple[str, str, Json]:
        body = _settlement(site, code)
        return "POST", "/v1/settlements", {**body, "lines": [{**body["lines"][0], **fields}]}
    return build


def _reversal(line_nos: int) -> Callable[[Site, str], tuple[str, str, Json]]:
    return lambda site, code: ("POST", f"/v1/settlements/{site.paid_settlement}/reversal",
                               {"reversal_id": f.settlement_id(),
                                "line_nos": list(range(1, line_nos + 1))})


def _verify(codes: int) -> Callable[[Site, str], tuple[str, str, Json]]:
    return lambda site, code: ("POST", "/v1/codes/verify", {
        "institution_id": site.institution, "trace_codes": [code] * codes})


TOO_BIG = frozenset({413})
REFUSED = frozenset({413, 422})
ABSURD = [
    Absurd("100,000 lines", _gate(lines=100_000), TOO_BIG),
    Absurd("2,000 lines (under the byte limit)", _gate(lines=2_000), REFUSED, "lines"),
    Absurd("201 lines", _gate(lines=201), frozenset({422}), "lines"),
    Absurd("100,000 codes on one line", _gate(codes=100_000), TOO_BIG),
    Absurd("501 codes on one line", _gate(codes=501), frozenset({422}), "trace_codes"),
    Absurd("a 129-character trace code", _line_field(trace_codes=["8" * 129]),
           frozenset({422}), "trace_codes"),
    Absurd("a 65-character drug_code", _line_field(drug_code="D" * 65), frozenset({422}),
           "drug_code"),
    Absurd("quantity of a billion", _line_field(quantity=10**9), frozenset({422}), "quantity"),
    Absurd("a 129-character patient_id", _gate(patient_id="p" * 129), frozenset({422}),
           "patient_id"),
    Absurd("reversal of 100,000 lines", _reversal(100_000), TOO_BIG),
    Absurd("reversal of 201 lines", _reversal(201), frozenset({422}), "line_nos"),
    Absurd("verify 100,000 codes", _verify(100_000), TOO_BIG),
    Absurd("verify 1,001 codes", _verify(1_001), frozenset({422}), "trace_codes"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in ABSURD])
async def test_absurd_counts_are_refused_before_any_work(
    case: Absurd, site: Site, tolerant_api: httpx.AsyncClient,
) -> None:
    code = f.cn20()
    method, url, body = case.build(site, code)
    headers = site.regulator if url.endswith("verify") else site.pos
    response = await tolerant_api.request(method, url, json=body, headers=headers)
    assert response.status_code in case.statuses, response.text[:300]
    error = assert_error_body(response, response.status_code)
    if response.status_code == 422 and case.field is not None:
        assert case.field in error["message"], error
    assert await status_of(tolerant_api, site, code) == "unpaid"  # nothing claimed
    assert await status_of(tolerant_api, site, site.paid_code) == "paid"  # nothing reversed
    if "settlement_id" in body:
        found = await tolerant_api.get(f"/v1/settlements/{body['settlement_id']}",
                                       headers=site.pos)
        assert found.status_code == 404, "the refused settlement was recorded"


# --- malformed JSON ----------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b'{"settlement_id": "S-1", ', id="truncated"),
    pytest.param(b'{"settlement_id": "S-1"} trailing', id="trailing garbage"),
    pytest.param(b"{'settlement_id': 'S-1'}", id="single quotes"),
    pytest.param(b"settlement", id="bare word"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b'{"settlement_id": "S-\xff\xfe"}', id="not UTF-8"),
    pytest.param(b"[" * 50_000 + b"]" * 50_000, id="nested 50,000 deep"),
]


@pytest.mark.parametrize("raw", MALFORMED)
async def test_malformed_json_is_422(
    raw: bytes, site: Site, tolerant_api: httpx.AsyncClient
) -> None:
    headers = {**site.pos, "content-type": "application/json"}
    response = await tolerant_api.post("/v1/settlements", content=raw, headers=headers)
    assert_error_body(response, 422)


# --- wrong types -------------------------------------------------------------------------------

def _settle_with(**fields: Any) -> Callable[[Site], tuple[str, Json]]:
    return lambda site: ("/v1/settlements", {**_settlement(site, f.cn20()), **fields})


def _line_with(**fields: Any) -> Callable[[Site], tuple[str, Json]]:
    def build(site: Site) -> tuple[str, Json]:
        body = _settlement(site, f.cn20())
        return "/v1/settlements", {**body, "lines": [{**body["lines"][0], **fields}]}
    return build


def _put_institution(**fields: Any) -> Callable[[Site], tuple[str, Json]]:
    return lambda site: (f"PUT /v1/institutions/{f.institution_id()}",
                         {"name": "x", "kind": "primary", **fields})


WRONG_TYPES: list[tuple[str, Callable[[Site], tuple[str, Json]], str]] = [
    ("settlement_id is a number", _settle_with(settlement_id=5), "settlement_id"),
    ("institution_id is a list", _settle_with(institution_id=[]), "institution_id"),
    ("settled_at is a number", _settle_with(settled_at=1_700_000_000), "settled_at"),
    ("settled_at is not a time", _settle_with(settled_at="yesterday"), "settled_at"),
    ("settled_at has no offset", _settle_with(settled_at="2025-07-01T10:00:00"), "settled_at"),
    ("settled_at is not a real date", _settle_with(settled_at="2025-02-30 10:00:00"),
     "settled_at"),
    ("patient_id is an object", _settle_with(patient_id={"id": 1}), "patient_id"),
    ("lines is a string", _settle_with(lines="many"), "lines"),
    ("lines is empty", _settle_with(lines=[]), "lines"),
    ("quantity is a word", _line_with(quantity="two"), "quantity"),
    ("quantity is fractional", _line_with(quantity=1.5), "quantity"),
    ("line_no is zero", _line_with(line_no=0), "line_no"),
    ("split is not a boolean", _line_with(split="maybe"), "split"),
    ("pack_size is negative", _line_with(pack_size=-1), "pack_size"),
    ("trace_codes is a string", _line_with(trace_codes="81234"), "trace_codes"),
    ("a trace code is a number", _line_with(trace_codes=[81234]), "trace_codes"),
    ("no_code_reason is unknown", _line_with(trace_codes=[], no_code_reason="forgot"),
     "no_code_reason"),
    ("reversal_id is a number", lambda site: (
        f"/v1/settlements/{site.paid_settlement}/reversal", {"reversal_id": 7}), "reversal_id"),
    ("line_nos is a string", lambda site: (
        f"/v1/settlements/{site.paid_settlement}/reversal",
        {"reversal_id": "R-x", "line_nos": "1"}), "line_nos"),
    ("verify trace_codes is a string", lambda site: (
        "/v1/codes/verify", {"institution_id": site.institution, "trace_codes": "8123"}),
     "trace_codes"),
    ("institution kind is unknown", _put_institution(kind="hospital"), "kind"),
    ("go_live_override is not a date", _put_institution(go_live_override="soon"),
     "go_live_override"),
    ("api key role is unknown", lambda site: ("/v1/api-keys", {"role": "root"}), "role"),
]


@pytest.mark.parametrize(("build", "field"), [
    pytest.param(build, field, id=name) for name, build, field in WRONG_TYPES])
async def test_wrong_types_are_422_naming_the_field(
    build: Callable[[Site], tuple[str, Json]], field: str, site: Site, admin_headers: Headers,
    tolerant_api: httpx.AsyncClient,
) -> None:
    target, body = build(site)
    method, _, url = target.rpartition(" ")
    headers = site.regulator if url.endswith("verify") else admin_headers
    response = await tolerant_api.request(method or "POST", url, json=body, headers=headers)
    error = assert_error_body(response, 422)
    assert field in error["message"], error


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "many"}, "limit"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
    ({"since": "yesterday"}, "since"), ({"until": "2025-07-01T10:00:00"}, "until"),
    ({"kind": "fraud"}, "kind"), ({"cursor": "not-a-cursor"}, "cursor"),
])
async def test_bad_flag_filters_are_422_naming_the_parameter(
    params: Json, field: str, admin_headers: Headers, tolerant_api: httpx.AsyncClient
) -> None:
    response = await tolerant_api.get("/v1/flags", params=params, headers=admin_headers)
    error = assert_error_body(response, 422)
    assert field in error["message"], error
