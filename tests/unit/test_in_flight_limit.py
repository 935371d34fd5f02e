"""The API's in-flight limit (service/api/limits.py): past its bound a hot call is answered
503 OVERLOADED with Retry-After at once, in the contract's error body, while the calls it
admitted finish; health checks and the flag stream are never counted. The bound falls while
admitted calls take longer than the target on average and climbs back when they do not."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import AdaptiveBound, InFlightLimit


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


def _crowded(bound: AdaptiveBound, seconds: float) -> None:
    """A call that finished with the whole bound in flight."""
    bound.done(seconds, bound.bound)


def test_the_bound_falls_while_calls_are_slow_and_climbs_back_when_they_are_not() -> None:
    bound = AdaptiveBound(most=64, target_s=0.05, least=8, window=4)
    for _ in range(3):
        _crowded(bound, 0.2)
    assert bound.bound == 64  # a window is judged whole, not call by call
    _crowded(bound, 0.2)
    assert bound.bound == 48  # cut by a quarter
    for _ in range(40):
        _crowded(bound, 0.2)
    assert bound.bound == 8  # never below `least`
    for _ in range(4 * 5):
        _crowded(bound, 0.01)
    assert bound.bound == 13  # one more a fast window
    for _ in range(4 * 100):
        _crowded(bound, 0.01)
    assert bound.bound == 64  # never above `most`


def test_a_mixed_window_is_judged_by_its_mean() -> None:
    bound = AdaptiveBound(most=16, target_s=0.05, least=2, window=4)
    for seconds in (0.01, 0.01, 0.01, 0.16):  # mean 0.0475: under the target
        _crowded(bound, seconds)
    assert bound.bound == 16
    for seconds in (0.01, 0.01, 0.01, 0.18):  # mean 0.0525: over it
        _crowded(bound, seconds)
    assert bound.bound == 12


def test_slow_calls_with_room_to_spare_leave_the_bound_alone() -> None:
    """An outage holds calls for seconds one or two at a time: that is not a crowd, and the
    bound must not come out of it lowered. Half the bound in flight is one."""
    bound = AdaptiveBound(most=64, target_s=0.05, least=8, window=4)
    for _ in range(4 * 10):
        bound.done(3.0, 2)
    assert bound.bound == 64
    for in_flight in (1, 2, 3, 32):  # the window's peak counts
        bound.done(0.2, in_flight)
    assert bound.bound == 48


async def test_slow_calls_make_the_limit_shed_sooner() -> None:
    """Calls that took 100 ms lower the bound from 16 to 12: the 13th concurrent call is shed
    where the count alone would have admitted it."""
    held = _HeldApp()
    limit = InFlightLimit(held, max_in_flight=16, target_s=0.05)
    limit.bound.window = 1
    limit.bound.done(0.1, 16)
    assert limit.bound.bound == 12
    admitted = [asyncio.create_task(_call(limit, "/v1/settlements")) for _ in range(12)]
    await asyncio.sleep(0)
    assert _status(await _call(limit, "/v1/settlements")) == 503
    held.release.set()
    assert {_status(sent) for sent in await asyncio.gather(*admitted)} == {200}


async def test_without_a_target_the_count_alone_bounds() -> None:
    limit = InFlightLimit(_HeldApp(), max_in_flight=16)
    for _ in range(1000):
        limit.bound.done(10.0, 16)
    assert limit.bound.bound == 16
