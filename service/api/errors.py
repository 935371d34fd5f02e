"""One place renders every error as the contract's `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

import asyncpg.exceptions as pg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.responses import JSONResponse
from service.kit.errors import AppError

log = logging.getLogger(__name__)

# PostgreSQL going away, as asyncpg names it: a connection lost (SQLSTATE class 08), the
# server shutting down or starting (57), out of connections (53). And asyncpg's "cannot
# switch to state …": an idle pooled connection the server ended (a restart, an
# administrator) can fail so on its next use, before asyncpg has seen the socket close
# (MagicStack/asyncpg#1069); the pool then discards it, and the retry gets a new one.
_POSTGRES_AWAY: tuple[type[Exception], ...] = (
    pg.PostgresConnectionError, pg.OperatorInterventionError, pg.InsufficientResourcesError,
    pg.InternalClientError,
)
# Failures of Redis or PostgreSQL themselves (connection refused, reset, timed out), through
# SQLAlchemy or asyncpg used directly (the lookup pool).
OUTAGES: tuple[type[Exception], ...] = (
    RedisError, OperationalError, InterfaceError, ConnectionError, TimeoutError, OSError,
    *_POSTGRES_AWAY,
)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()[:20]
    ]
    return error_response(422, "VALIDATION_ERROR", "; ".join(problems))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's own "error parsing the body" (not UTF-8, nested too deep): a malformed
        # body, which the contract answers with 422. Nothing of ours raises HTTPException.
        return error_response(422, "MALFORMED_BODY", f"request body is not JSON: {exc.detail}")
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _bad_value(_: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL cannot store (a NUL character, an out-of-range number or time):
    the client's input, so 422 — the rules above it let it through, not a server fault."""
    reason = getattr(exc, "orig", None) or exc
    return error_response(422, "INVALID_VALUE", f"a value cannot be stored: {reason}")


async def _dependency_down(_: Request, exc: Exception) -> JSONResponse:
    """Redis or PostgreSQL unreachable is an outage, not a bug: 503 and try again."""
    log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
    message = f"a backing service is unavailable ({type(exc).__name__}); retry shortly"
    return error_response(503, "DEPENDENCY_UNAVAILABLE", message, {"Retry-After": "1"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Errors SQLAlchemy passes on unclassified, judged by asyncpg's own error beneath them
    as the handlers above judge it unwrapped: a data exception (e.g. a NUL character) is the
    client's input, PostgreSQL going away ("too many clients" arrives so when the pool
    opens a connection) an outage; anything else is ours."""
    orig = getattr(exc, "orig", None)
    driver = orig if isinstance(orig, pg.PostgresError) else getattr(orig, "__cause__", None)
    if isinstance(driver, pg.DataError):
        return await _bad_value(request, exc)
    if isinstance(driver, _POSTGRES_AWAY):
        return await _dependency_down(request, exc)
    return await _unexpected(request, exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    for bad_value in (DataError, pg.DataError, OverflowError):
        app.add_exception_handler(bad_value, _bad_value)
    for outage in OUTAGES:
        app.add_exception_handler(outage, _dependency_down)
    app.add_exception_handler(Exception, _unexpected)
