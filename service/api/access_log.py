"""The access log and the request id, as a pure ASGI middleware (Starlette's
BaseHTTPMiddleware runs every call through extra tasks and streams: CPU the gate pays per call).

Each HTTP call gets a request id: the client's `X-Request-ID` when it is a sane token, else a
new one. It is echoed in the response and bound to every log line written while the call runs.
The access line holds method, path (never the query string, which may carry secrets), status
and latency; never headers (Authorization) nor bodies."""

from __future__ import annotations

import os
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_MAX_PATH = 512
# Polled every few seconds by probes and Prometheus: below INFO, so they do not drown the rest.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Resolved once, as logging is configured when the app is built: a lazy logger would
        # look its configuration up again on every call.
        self.log = structlog.get_logger("tracegate.access").bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        echoed = (b"x-request-id", request_id.encode())
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        started = time.perf_counter()
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log_access(scope, status, time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**bound)

    def _log_access(self, scope: Scope, status: int, seconds: float) -> None:
        path: str = scope["path"][:_MAX_PATH]
        emit = self.log.debug if path in _QUIET_PATHS else self.log.info
        emit("request", method=scope["method"], path=path, status=status,
             duration_ms=round(seconds * 1000, 3))


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return str(value.decode())
    return os.urandom(16).hex()  # as random as a uuid4, without building one
