"""Refuse an oversized body before any work is done (413), whether or not it declares its
length; refuse a call the process has no room for (503 OVERLOADED) instead of queueing it."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        await _Counted(self, scope, receive, send).run()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body over {self.max_bytes} bytes"
        await error_response(413, "BODY_TOO_LARGE", message)(scope, receive, send)


class _Counted:
    """A body without a declared length is counted as it arrives; past the limit the client
    gets 413 at once and the app sees a disconnect (whatever it answers then is dropped)."""

    def __init__(self, limit: BodySizeLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit, self.scope, self.receive, self.send = limit, scope, receive, send
        self.seen = 0
        self.refused = False

    async def run(self) -> None:
        await self.limit.app(self.scope, self.counted, self.guarded_send)

    async def counted(self) -> Message:
        message = await self.receive()
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit.max_bytes and not self.refused:
            self.refused = True
            await self.limit._refuse(self.scope, self.receive, self.send)
            return {"type": "http.disconnect"}
        return message

    async def guarded_send(self, message: Message) -> None:
        if not self.refused:
            await self.send(message)


class AdaptiveBound:
    """How many calls a process admits at once, moved by how long the admitted ones take
    (additive increase, multiplicative decrease, as TCP moves its window): cut by a quarter
    when a window of calls averaged over `target_s` while at least half the bound was in
    flight at once, since the process is then queueing its own work; raised by one when they
    did not; between `least` and `most`. Slow calls with room to spare are not a crowd (a
    dependency held them: an outage's timeouts) and leave the bound alone, so it does not
    come out of an outage lowered for a burst it never saw.

    A fixed count bounds what is admitted, not what the CPU can carry. Measured at 4,000
    calls/s on two cores, 256 calls a worker were answered with a p99 of 6.3 s and 32 with
    197 ms, yet 64 already shed calls at 2,000/s: the right count depends on the load. Past
    capacity, a served call costs several times a shed one, so admitting fewer leaves the
    CPU to read and shed the rest before they wait in the kernel for seconds."""

    def __init__(self, most: int, target_s: float, least: int = 8, window: int = 32) -> None:
        self.most, self.target_s = most, target_s
        self.least = min(least, most)
        self.window = window
        self.bound = most
        self._calls, self._seconds, self._crowd = 0, 0.0, 0

    def done(self, seconds: float, in_flight: int) -> None:
        """One admitted call finished after `seconds`, with `in_flight` calls (itself too)
        in flight."""
        self._calls += 1
        self._seconds += seconds
        self._crowd = max(self._crowd, in_flight)
        if self._calls < self.window:
            return
        if self._seconds / self._calls > self.target_s and 2 * self._crowd >= self.bound:
            self.bound = max(self.least, self.bound * 3 // 4)
        else:
            self.bound = min(self.most, self.bound + 1)
        self._calls, self._seconds, self._crowd = 0, 0.0, 0


class InFlightLimit:
    """Past `max_in_flight` calls at once in this process, or past the bound that keeps its
    calls under `target_s` on average (AdaptiveBound; 0: the count alone), answer 503
    OVERLOADED at once (the contract's error body, on the kept-alive connection) instead of
    queueing for seconds: a POS can retry a 503, it cannot use an answer that came after its
    timeout. Health checks and the flag stream (open for hours) are not counted."""

    def __init__(self, app: ASGIApp, max_in_flight: int, target_s: float = 0.0) -> None:
        self.app = app
        self.in_flight = 0
        self.bound = AdaptiveBound(max_in_flight, target_s or float("inf"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _counted(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.bound.bound:
            message = "this process is at capacity; retry shortly"
            response = error_response(503, "OVERLOADED", message, {"Retry-After": "1"})
            await response(scope, receive, send)
            return
        self.in_flight += 1
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.bound.done(time.perf_counter() - began, self.in_flight)
            self.in_flight -= 1


def _counted(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith("/v1/flags/stream")
