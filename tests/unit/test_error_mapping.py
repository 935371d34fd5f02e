"""What the API answers when a backing service fails below it. asyncpg's own errors reach the
handlers unwrapped from the lookup pool (SQLAlchemy's wrapped ones are covered end to end)."""

from __future__ import annotations

import asyncpg.exceptions as pg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from service.api.errors import install_error_handlers


def _raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/")
    async def fail() -> None:
        raise error

    return app


async def _answer(error: Exception) -> httpx.Response:
    transport = httpx.ASGITransport(app=_raising(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


@pytest.mark.parametrize("error", [
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.AdminShutdownError("terminating connection due to administrator command"),
    pg.CannotConnectNowError("the database system is starting up"),
    pg.TooManyConnectionsError("sorry, too many clients already"),
    # an idle connection the server ended, used before asyncpg saw its socket close
    pg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
])
async def test_postgresql_going_away_under_asyncpg_is_503_with_retry_after(
    error: Exception,
) -> None:
    response = await _answer(error)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    assert response.headers["retry-after"] == "1"


async def test_too_many_clients_through_sqlalchemy_is_503_too() -> None:
    """SQLAlchemy passes "too many clients" on as a plain DBAPIError when its pool connects."""
    error = DBAPIError("SELECT 1", None, pg.TooManyConnectionsError("sorry, too many clients"))
    response = await _answer(error)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "DEPENDENCY_UNAVAILABLE"


async def test_a_value_postgresql_cannot_take_under_asyncpg_is_422() -> None:
    response = await _answer(pg.CharacterNotInRepertoireError("invalid byte sequence: 0x00"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "INVALID_VALUE"


async def test_other_asyncpg_errors_stay_500() -> None:
    response = await _answer(pg.UndefinedTableError('relation "settlements" does not exist'))
    assert response.status_code == 500
