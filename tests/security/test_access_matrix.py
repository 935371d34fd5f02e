"""CONTRACT §4 access rules, as a matrix: every endpoint × every kind of caller.

Callers: admin; a pos key acting for its own institution (`pos_own`) and one acting for another
institution (`pos_other`); regulator; ops; and four that are nobody — no Authorization header,
a well-formed key that was never issued, an admin key revoked before its first use, and the
admin key sent under a scheme other than Bearer. Expected: 401 for nobody, 403 for a role or
institution the endpoint does not allow, its success status otherwise; /healthz, /readyz and
/metrics answer everybody (a bogus key included)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI

from service.settings import Settings
from tests import factories as f
from tests.hostile.support import history
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")

Headers = dict[str, str]

NOBODY = ("no_key", "unknown_key", "revoked_key", "wrong_scheme")
CALLERS = ("admin", "pos_own", "pos_other", "regulator", "ops", *NOBODY)
ERROR_CODES = {401: "UNAUTHENTICATED", 403: "FORBIDDEN"}


@dataclass
class World:
    """What the requests act on: institution `own` (where pos_own belongs; `other` is where
    pos_other belongs), a settlement recorded at `own` and its trace code."""

    own: str
    other: str
    settlement_id: str
    code: str
    callers: dict[str, Headers] = field(default_factory=dict)
    spare_keys: list[int] = field(default_factory=list)  # for the revocation calls
    flags: list[str] = field(default_factory=list)  # recorded flags, new: one per triage call
    drug: str = "XC09AAL012A001010100543"  # in the catalogue

    def spare_key(self) -> int:
        return self.spare_keys.pop()

    def spare_flag(self) -> str:
        return self.flags.pop()


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    stream: bool = False


@dataclass(frozen=True)
class Endpoint:
    name: str
    allowed: frozenset[str]  # callers that succeed; "*" = everybody, keyless included
    call: Callable[[World], Call]
    success: int = 200

    def expected(self, caller: str) -> int:
        if "*" in self.allowed:
            return self.success
        if caller in NOBODY:
            return 401
        return self.success if caller in self.allowed else 403


def _allow(*callers: str) -> frozenset[str]:
    return frozenset(callers)


def _institution_body(world: World) -> dict[str, Any]:
    return {"name": f"test {world.own}", "kind": "retail_pharmacy", "region": "110105",
            "go_live_override": None}


ENDPOINTS = [
    Endpoint("POST /v1/settlements", _allow("admin", "pos_own"), lambda w: Call(
        "POST", "/v1/settlements", f.settlement(w.own, [f.line(1, [f.cn20()])]))),
    Endpoint("POST /v1/settlements/{id}/reversal", _allow("admin", "pos_own"), lambda w: Call(
        "POST", f"/v1/settlements/{w.settlement_id}/reversal",
        {"reversal_id": f.settlement_id()})),
    Endpoint("GET /v1/settlements/{id}", _allow("admin", "pos_own", "regulator"), lambda w: Call(
        "GET", f"/v1/settlements/{w.settlement_id}")),
    Endpoint("POST /v1/codes/verify", _allow("pos_own", "regulator"), lambda w: Call(
        "POST", "/v1/codes/verify", {"institution_id": w.own, "trace_codes": [w.code]})),
    Endpoint("GET /v1/codes/{code}", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", f"/v1/codes/{w.code}")),
    Endpoint("GET /v1/flags", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", f"/v1/flags?institution_id={w.own}")),
    Endpoint("GET /v1/flags/stream", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", f"/v1/flags/stream?institution_id={w.own}", stream=True)),
    Endpoint("GET /v1/flags/summary", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", f"/v1/flags/summary?institution_id={w.own}")),
    Endpoint("GET /v1/flags/{id}", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", f"/v1/flags/{w.flags[0]}")),
    Endpoint("PATCH /v1/flags/{id}", _allow("admin", "regulator", "ops"), lambda w: Call(
        "PATCH", f"/v1/flags/{w.spare_flag()}", {"status": "investigating"})),
    Endpoint("GET /v1/ops/series", _allow("admin", "regulator", "ops"), lambda w: Call(
        "GET", "/v1/ops/series")),
    Endpoint("GET /v1/me", _allow("admin", "pos_own", "pos_other", "regulator", "ops"),
             lambda w: Call("GET", "/v1/me")),
    Endpoint("PUT /v1/institutions/{id}", _allow("admin"), lambda w: Call(
        "PUT", f"/v1/institutions/{w.own}", _institution_body(w))),
    Endpoint("GET /v1/institutions/{id}", _allow("admin", "regulator"), lambda w: Call(
        "GET", f"/v1/institutions/{w.own}")),
    Endpoint("POST /v1/api-keys", _allow("admin"), lambda w: Call(
        "POST", "/v1/api-keys", {"role": "pos", "institution_id": w.own}), success=201),
    Endpoint("DELETE /v1/api-keys/{id}", _allow("admin"), lambda w: Call(
        "DELETE", f"/v1/api-keys/{w.spare_key()}")),
    Endpoint("GET /v1/institutions", _allow("admin", "regulator"), lambda w: Call(
        "GET", "/v1/institutions?limit=5")),
    Endpoint("GET /v1/api-keys", _allow("admin"), lambda w: Call("GET", "/v1/api-keys?limit=5")),
    Endpoint("POST /v1/nhsa", _allow("admin", "pos_own"), lambda w: Call(
        "POST", "/v1/nhsa", f.nhsa_sale(w.own, f.nhsa_row([f.cn20()])))),
    Endpoint("POST /v1/nhsa (3513)", _allow("admin", "pos_own", "regulator"), lambda w: Call(
        "POST", "/v1/nhsa", f.nhsa_message("3513", w.own, {"drug_trac_codg": w.code}))),
    Endpoint("PUT /v1/drugs/{code}", _allow("admin"), lambda w: Call(
        "PUT", f"/v1/drugs/{w.drug}", {"name": "缬沙坦胶囊", "pack_size": 7})),
    Endpoint("GET /v1/drugs/{code}", _allow("admin", "regulator"), lambda w: Call(
        "GET", f"/v1/drugs/{w.drug}")),
    Endpoint("GET /healthz", _allow("*"), lambda w: Call("GET", "/healthz")),
    Endpoint("GET /readyz", _allow("*"), lambda w: Call("GET", "/readyz")),
    Endpoint("GET /metrics", _allow("*"), lambda w: Call("GET", "/metrics")),
]

CASES = [pytest.param(endpoint, caller, id=f"{endpoint.name}|{caller}")
         for endpoint in ENDPOINTS for caller in CALLERS]


async def mint(api: httpx.AsyncClient, admin: Headers, role: str,
               institution: str | None = None) -> tuple[int, str]:
    body = {"role": role, "institution_id": institution}
    response = await api.post("/v1/api-keys", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()["key_id"], response.json()["key"]


async def revoke(api: httpx.AsyncClient, admin: Headers, key_id: int) -> dict[str, Any]:
    response = await api.delete(f"/v1/api-keys/{key_id}", headers=admin)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def bearer(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def world(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings
) -> World:
    own, other = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    body = f.settlement(own, [f.line(1, [code])])
    response = await api.post("/v1/settlements", json=body, headers=admin_headers)
    assert response.json()["decision"] == "pay", response.text
    found = await eventually(lambda: history(api, admin_headers, code), bool)
    assert found is not None, "the consumer never recorded the setup settlement"
    revoked_id, revoked_key = await mint(api, admin_headers, "admin")
    await revoke(api, admin_headers, revoked_id)
    admin_key = admin_headers["Authorization"].removeprefix("Bearer ")
    callers = {
        "admin": admin_headers,
        "pos_own": bearer((await mint(api, admin_headers, "pos", own))[1]),
        "pos_other": bearer((await mint(api, admin_headers, "pos", other))[1]),
        "regulator": bearer((await mint(api, admin_headers, "regulator"))[1]),
        "ops": bearer((await mint(api, admin_headers, "ops"))[1]),
        "no_key": {},
        "unknown_key": bearer("tg_" + secrets.token_urlsafe(32)),
        "revoked_key": bearer(revoked_key),
        "wrong_scheme": {"Authorization": f"Basic {admin_key}"},
    }
    spares = [(await mint(api, admin_headers, "ops"))[0] for _ in CALLERS]
    flags = await _recorded_flags(api, admin_headers, own, other, len(CALLERS) + 1)
    drug = {"name": "缬沙坦胶囊", "pack_size": 7}
    assert (await api.put(f"/v1/drugs/{World.drug}", json=drug, headers=admin_headers)
            ).status_code == 200
    return World(own, other, body["settlement_id"], code, callers, spares, flags)


async def _recorded_flags(
    api: httpx.AsyncClient, admin: Headers, own: str, other: str, count: int
) -> list[str]:
    """`count` new flags at `other`: one code paid at `own`, then settled again and again."""
    code = f.cn20()
    await f.settle(api, admin, f.settlement(own, [f.line(1, [code])]))
    ids = [(await f.settle(api, admin, f.settlement(other, [f.line(1, [code])])))["flags"][0]
           for _ in range(count)]

    async def recorded() -> int:
        page = await api.get("/v1/flags", params={"institution_id": other, "limit": 1000},
                             headers=admin)
        return len(page.json()["items"])

    assert await eventually(recorded, lambda n: n >= count) == count
    return ids


async def send(
    call: Call, headers: Headers, api: httpx.AsyncClient, live_api: str
) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body; an SSE stream is closed as soon as its headers arrive."""
    if not call.stream:
        response = await api.request(call.method, call.url, json=call.json, headers=headers)
        return response.status_code, dict(response.headers), response.content
    async with httpx.AsyncClient(base_url=live_api, timeout=10) as http:
        async with http.stream(call.method, call.url, headers=headers) as response:
            body = b"" if response.status_code == 200 else await response.aread()
            return response.status_code, dict(response.headers), body


@pytest.mark.parametrize(("endpoint", "caller"), CASES)
async def test_access(
    endpoint: Endpoint, caller: str, world: World, tolerant_api: httpx.AsyncClient,
    live_api: str,
) -> None:
    call = endpoint.call(world)
    status, headers, body = await send(call, world.callers[caller], tolerant_api, live_api)
    expected = endpoint.expected(caller)
    assert status == expected, f"{endpoint.name} as {caller}: {status} {body[:300]!r}"
    if expected in ERROR_CODES:
        assert headers["content-type"].startswith("application/json")
        error = orjson.loads(body)["error"]
        assert error["code"] == ERROR_CODES[expected]
        assert error["message"]
    elif call.stream:
        assert headers["content-type"].startswith("text/event-stream")


def test_the_matrix_covers_every_operation_of_the_openapi_document(app: FastAPI) -> None:
    def shape(name: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", name).split(" (")[0]  # "(3513)": a second body

    documented = {shape(f"{method.upper()} {path}")
                  for path, operations in app.openapi()["paths"].items() for method in operations}
    tested = {shape(endpoint.name) for endpoint in ENDPOINTS}
    assert documented <= tested, f"untested operations: {sorted(documented - tested)}"


async def test_revoking_a_key_in_use_shuts_it_out_within_the_cache_ttl(
    tolerant_api: httpx.AsyncClient, admin_headers: Headers, settings: Settings
) -> None:
    """Known keys are cached in-process for 10 s (service/api/clients.py): a revocation made
    through another API process (here: straight in the table) takes effect within that."""
    key_id, key = await mint(tolerant_api, admin_headers, "regulator")
    assert (await tolerant_api.get("/v1/flags?limit=1", headers=bearer(key))).status_code == 200
    await revoke_elsewhere(settings, key_id)

    async def status() -> int:
        return (await tolerant_api.get("/v1/flags?limit=1", headers=bearer(key))).status_code

    assert await eventually(status, lambda code: code == 401, timeout_s=12) == 401


async def revoke_elsewhere(settings: Settings, key_id: int) -> None:
    """What another API worker's revocation looks like to this one: the row changes."""
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await connection.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
    finally:
        await connection.close()


async def test_revoking_through_the_api_shuts_the_key_out_at_once(
    tolerant_api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    key_id, key = await mint(tolerant_api, admin_headers, "regulator")
    assert (await tolerant_api.get("/v1/flags?limit=1", headers=bearer(key))).status_code == 200
    first = await revoke(tolerant_api, admin_headers, key_id)
    assert first["key_id"] == key_id
    # This process forgets the cached key with the revocation: no 10 s grace here.
    assert (await tolerant_api.get("/v1/flags?limit=1", headers=bearer(key))).status_code == 401
    assert await revoke(tolerant_api, admin_headers, key_id) == first  # idempotent
    unknown = await tolerant_api.delete("/v1/api-keys/999999999", headers=admin_headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "KEY_NOT_FOUND"


async def test_an_admin_cannot_revoke_the_key_it_calls_with(
    tolerant_api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    key_id, key = await mint(tolerant_api, admin_headers, "admin")
    own = await tolerant_api.delete(f"/v1/api-keys/{key_id}", headers=bearer(key))
    assert own.status_code == 409
    assert own.json()["error"]["code"] == "KEY_IN_USE"
    assert (await tolerant_api.get("/v1/flags?limit=1", headers=bearer(key))).status_code == 200
