"""The FastAPI application: lifespan builds the clients, routers come from the domains."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.clients import Clients, open_clients
from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimit
from service.api.responses import JSONResponse
from service.api.routes import admin, codes, flags, health, settlements
from service.auth.service import ensure_admin_key
from service.firstseen import rebuild
from service.kit.garbage_collection import tune_for_throughput
from service.records.partitions import partitions_kept
from service.settings import API_SECRETS, Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_clients(settings) as clients, partitions_kept(
            settings, clients.metrics.registry
        ):
            await _bootstrap(clients)
            app.state.clients = clients
            yield

    app = FastAPI(
        title="tracegate",
        summary="Drug trace-code enforcement: 依码结算 / 无码不付",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (settlements.router, codes.router, flags.router, admin.router):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def production_app() -> FastAPI:
    """`tracegate api`'s app factory: uvicorn calls it in each worker process, after which
    the process only serves requests (so its start-up objects leave the collector's sight)."""
    settings = Settings()
    settings.require_secrets(API_SECRETS)
    app = create_app(settings)
    tune_for_throughput()
    return app


async def _bootstrap(clients: Clients) -> None:
    settings = clients.settings
    # A new stack (or a Redis that lost everything) has no first-seen set yet.
    await rebuild.ensure(settings.asyncpg_dsn, clients.redis, clients.store.layout)
    key = clients.settings.bootstrap_admin_key
    if key is None:
        return
    async with clients.sessionmaker() as session, session.begin():
        pepper = clients.settings.api_key_pepper.get_secret_value()
        await ensure_admin_key(session, pepper, key.get_secret_value())
