"""The app's entry (service/api/app.py): every call passes the access log and the in-flight
limit, the hot routes leave by their lane ahead of FastAPI's own stack, the others go
through it. Whichever way a call goes, an error it meets is answered in the contract's error
body, with the call's request id, and leaves the in-flight count as it found it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.api.limits import InFlightLimit
from service.api.routes import settlements
from service.settings import Settings


def _in_flight_limit(app: FastAPI) -> InFlightLimit:
    layer: Any = app.middleware_stack
    while not isinstance(layer, InFlightLimit):
        layer = layer.app
    return layer


async def _call(app: FastAPI, method: str, path: str, body: bytes = b"") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, content=body, headers={
            "X-Request-ID": "entry-test-1", "Content-Type": "application/json"})


def _assert_internal(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.json() == {"error": {"code": "INTERNAL", "message": "internal error"}}
    assert response.headers["x-request-id"] == "entry-test-1"


async def test_a_bug_under_the_lane_is_a_500_in_the_contract_body(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(request: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(settlements, "settle", broken)  # the lane calls the route's own
    app = create_app(settings)
    _assert_internal(await _call(app, "POST", "/v1/settlements", b"{}"))
    assert _in_flight_limit(app).in_flight == 0


async def test_a_bug_in_an_ordinary_route_is_a_500_in_the_contract_body(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    _assert_internal(await _call(app, "GET", "/v1/boom"))
    assert _in_flight_limit(app).in_flight == 0
