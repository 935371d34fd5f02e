"""Request dependencies: the clients, a session whose transaction the request owns, the
caller behind the API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.clients import Clients
from service.auth.schemas import Caller
from service.auth.service import Unauthenticated, authenticate
from service.settings import Settings


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop per dependency per request that capped the gate at ~300 calls/s.
async def get_clients(request: Request) -> Clients:
    clients: Clients = request.app.state.clients
    return clients


ClientsDep = Annotated[Clients, Depends(get_clients)]


async def get_settings(clients: ClientsDep) -> Settings:
    return clients.settings


async def get_session(clients: ClientsDep) -> AsyncIterator[AsyncSession]:
    """The unit of work of one request: commits when the route returns, rolls back if it
    raises. Services below only flush."""
    async with clients.sessionmaker() as session, session.begin():
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


async def get_caller(
    clients: ClientsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("missing 'Authorization: Bearer <api key>'")
    pepper = clients.settings.api_key_pepper.get_secret_value()
    return await authenticate(
        clients.sessionmaker, pepper, credentials.credentials, clients.callers
    )


CallerDep = Annotated[Caller, Depends(get_caller)]
