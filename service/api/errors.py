"""One place renders every error as the contract's `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
from typing import Any

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
    problems = [_problem(err) for err in exc.errors()[:20]]
    return error_response(422, "VALIDATION_ERROR", "; ".join(problems))


# What each pattern of the request schemas asks for, in words: a client reads the message,
# and a regular expression (or pydantic's "Value error, " prefix) tells it nothing.
_PATTERNS_IN_WORDS = {
    r"^[\x21-\x7e]+$": "must be printable ASCII characters, without spaces",
}


def _problem(err: Any) -> str:
    """`field.path: what is wrong`, in words."""
    kind, context, where = err.get("type"), err.get("ctx") or {}, list(err["loc"])
    words = str(err["msg"])
    if kind == "string_pattern_mismatch":
        words = _PATTERNS_IN_WORDS.get(str(context.get("pattern")), "is not in an accepted form")
    elif kind == "json_invalid":  # its location is a character position, not a field
        where = [f"body (at character {where[-1]})"]
        words = f"not valid JSON: {context.get('error', 'malformed')}"
    elif kind == "value_error":
        words = words.removeprefix("Value error, ")
    elif kind == "missing" and where == ["body"]:
        words = "a JSON body is required"
    return f"{'.'.join(str(part) for part in where)}: {words}"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's own "error parsing the body" (not UTF-8, nested too deep): a malformed
        # body, which the contract answers with 422. Nothing of ours raises HTTPException.
        return error_response(422, "MALFORMED_BODY", f"request body is not JSON: {exc.detail}")
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


# PostgreSQL's data exceptions (SQLSTATE class 22) a client's value can cause, in words.
_STORE_PROBLEMS = {
    "22021": "a text contains a character that cannot be stored (a NUL, or not UTF-8)",
    "22P05": "a text contains a character that cannot be stored (a NUL, or not UTF-8)",
    "22003": "a number is out of the range that can be stored",
    "22008": "a date or time is out of the range that can be stored",
    "22001": "a text is longer than can be stored",
}


async def _bad_value(_: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL cannot store (a NUL character, an out-of-range number or time):
    the client's input, so 422 — the rules above it let it through, not a server fault.
    The message says what is wrong in words, never PostgreSQL's own text."""
    return error_response(422, "INVALID_VALUE", _store_problem(exc))


def _store_problem(exc: Exception) -> str:
    if isinstance(exc, OverflowError):
        return "a number or time is out of the range that can be stored"
    orig = getattr(exc, "orig", None) or exc
    driver = orig if isinstance(orig, pg.PostgresError) else getattr(orig, "__cause__", orig)
    fallback = "a value is out of range, or in a form that cannot be stored"
    return _STORE_PROBLEMS.get(str(getattr(driver, "sqlstate", "")), fallback)


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
