"""The hot routes' lane: POST /v1/settlements, its reversal and /v1/codes/verify, called
straight from the app's entry (service/api/app.py), ahead of FastAPI's middleware stack, its
router and its dependency solving. Measured, that machinery cost the gate more CPU than
deciding the settlement. The endpoint functions are the routes' own (service/api/routes), so
the app behaves the same by either way in; an error is rendered by the handler the app has
for it (service/api/errors.py), as FastAPI would. Everything else, and a body that does not
say its length, takes the ordinary way."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.api.routes import codes, settlements

Endpoint = Callable[..., Awaitable[Response]]
_REVERSAL = re.compile(r"^/v1/settlements/([^/]+)/reversal$")


class FastLane:
    def __init__(self, app: ASGIApp, fastapi: FastAPI, max_body_bytes: int) -> None:
        self.app = app
        self.fastapi = fastapi  # whose exception handlers render the lane's errors
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if scope["type"] == "http" else None
        length = _declared_length(scope) if route is not None else None
        if route is None or length is None:
            await self.app(scope, receive, send)
            return
        if length > self.max_body_bytes:
            refused = error_response(413, "BODY_TOO_LARGE",
                                     f"request body over {self.max_body_bytes} bytes")
            await refused(scope, receive, send)
            return
        endpoint, arguments = route
        response = await self._answer(endpoint, arguments, Request(scope, receive))
        await response(scope, receive, send)

    async def _answer(
        self, endpoint: Endpoint, arguments: tuple[Any, ...], request: Request
    ) -> Response:
        try:
            return await endpoint(*arguments, request)
        except Exception as exc:  # noqa: BLE001 - rendered by the app's handler for it
            return await self._handled(request, exc)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        handlers = self.fastapi.exception_handlers
        for kind in type(exc).__mro__:
            handler: Any = handlers.get(kind)
            if handler is not None:
                response: Response = await handler(request, exc)
                return response
        raise exc


def _route(scope: Scope) -> tuple[Endpoint, tuple[Any, ...]] | None:
    if scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path == "/v1/settlements":
        return settlements.settle, ()
    if path == "/v1/codes/verify":
        return codes.verify_codes, ()
    reversal = _REVERSAL.match(path)
    if reversal is not None:
        return settlements.reverse, (reversal.group(1),)
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
