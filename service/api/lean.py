"""What the hot routes (settle, reverse, verify) share: the body decoded once into its typed
struct (msgspec, errors in words), the caller from the in-process key cache, an answer that
is already JSON. They take the raw request instead of FastAPI's pydantic models and
dependency chains, which cost more than the rest of a gate call; their OpenAPI documents the
same shapes (`documented`)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from fastapi import Request
from starlette.responses import Response

from service.api.clients import Clients
from service.auth.schemas import Caller
from service.auth.service import Unauthenticated, authenticate
from service.kit.errors import Unprocessable
from service.kit.validation import describe

T = TypeVar("T")


class InvalidBody(Unprocessable):
    code = "VALIDATION_ERROR"


def clients_of(request: Request) -> Clients:
    clients: Clients = request.app.state.clients
    return clients


async def caller_of(request: Request, clients: Clients) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("missing 'Authorization: Bearer <api key>'")
    pepper = clients.settings.api_key_pepper.get_secret_value()
    return await authenticate(clients.sessionmaker, pepper, key.strip(), clients.callers)


async def body_of(request: Request, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        return decoder.decode(await request.body())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidBody(describe(exc)) from None


def json_answer(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


# The scheme FastAPI's HTTPBearer registers for the other routes.
BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def documented(model: type[Any] | None = None) -> dict[str, Any]:
    """A lean route's OpenAPI: its bearer key and the request body it decodes (the body's
    components are added to the document by the app)."""
    if model is None:
        return dict(BEARER)
    return {**BEARER, "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def components(*models: type[Any]) -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}")
    return schemas
