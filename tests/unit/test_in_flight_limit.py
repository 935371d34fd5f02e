"""The API's in-flight limit (service/api/limits.py): past its count a hot call is answered
503 OVERLOADED with Retry-After at once, in the contract's error body, while the calls it
admitted finish; health checks and the flag stream are never counted."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import InFlightLimit


class _HeldApp:
    """Answers 200 once `release` is set: the calls it holds stay in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _call(app: Any, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [],
             "query_string": b""}
    await app(scope, receive, send)
    return sent


def _status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


async def test_past_the_limit_a_call_is_shed_at_once_and_the_admitted_ones_finish() -> None:
    held = _HeldApp()
    limit = InFlightLimit(held, max_in_flight=2)
    admitted = [asyncio.create_task(_call(limit, "/v1/settlements")) for _ in range(2)]
    await asyncio.sleep(0)
    assert (held.entered, limit.in_flight) == (2, 2)
    shed = await asyncio.wait_for(_call(limit, "/v1/settlements"), 1.0)  # not queued
    assert _status(shed) == 503
    assert (b"retry-after", b"1") in shed[0]["headers"]
    error = orjson.loads(shed[1]["body"])["error"]
    assert error["code"] == "OVERLOADED"
    assert "capacity" in error["message"]
    assert held.entered == 2  # the shed call never reached the app
    held.release.set()
    assert [_status(sent) for sent in await asyncio.gather(*admitted)] == [200, 200]
    assert limit.in_flight == 0
    assert _status(await _call(limit, "/v1/settlements")) == 200  # room again


async def test_health_checks_and_the_flag_stream_are_not_counted() -> None:
    held = _HeldApp()
    limit = InFlightLimit(held, max_in_flight=1)
    busy = asyncio.create_task(_call(limit, "/v1/codes/verify"))
    await asyncio.sleep(0)
    assert limit.in_flight == 1
    uncounted = [asyncio.create_task(_call(limit, path))
                 for path in ("/healthz", "/readyz", "/v1/flags/stream")]
    await asyncio.sleep(0)
    assert held.entered == 4  # all of them reached the app, none was shed
    assert limit.in_flight == 1
    held.release.set()
    answers = await asyncio.gather(busy, *uncounted)
    assert [_status(sent) for sent in answers] == [200] * 4
