"""JSON responses rendered by orjson: the hot routes build plain dicts and skip a second
validation pass through response models (the models still document them in OpenAPI)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette import responses


class JSONResponse(responses.JSONResponse):
    """A JSONResponse (so OpenAPI documents JSON bodies), rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error: CONTRACT §4's `{"error": {"code", "message"}}`."""

    error: ErrorDetail


# Documented on every route; which of them a route can answer is in the contract.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "missing or unknown API key"),
        (403, "a role or institution this key may not act for"),
        (404, "not found"),
        (409, "conflict with an earlier request"),
        (413, "body too large"),
        (422, "malformed or invalid request"),
        (503, "a backing service is unavailable; retry"),
    )
}
