"""The FastAPI application: lifespan builds the clients, routers come from the domains."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from service.api.access_log import AccessLog
from service.api.clients import Clients, open_clients
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.fastlane import FastLane
from service.api.lean import components
from service.api.limits import BodySizeLimit, InFlightLimit
from service.api.openapi import install_openapi
from service.api.responses import JSONResponse
from service.api.routes import admin, codes, drugs, flags, health, listings, nhsa, settlements
from service.api.routes.codes import VerifyRequest
from service.api.routes.console import install_console
from service.auth.service import ensure_admin_key
from service.console.sampler import Sampler, sampling
from service.decisions.schemas import Settlement
from service.firstseen import rebuild
from service.kit.garbage_collection import tune_for_throughput
from service.kit.logs import configure_logging
from service.records.partitions import partitions_kept
from service.settings import API_SECRETS, Settings
from service.settlements.schemas import ReversalRequest


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_clients(settings) as clients, _console_sampler(clients) as sampler, \
                partitions_kept(settings, clients.metrics.partition_months_ahead):
            await _bootstrap(clients)
            app.state.clients, app.state.sampler = clients, sampler
            yield

    app = _Service(
        title="tracegate",
        summary="Drug trace-code enforcement: 依码结算 / 无码不付",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None, redoc_url=None,  # install_docs: Swagger UI from the package
        # Metrics are Prometheus's and logs structlog's (service/kit): FastAPI's own
        # OpenTelemetry stays off, so it does not look for a configured one on every call.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_docs(app)
    install_console(app)
    install_openapi(app)
    app.include_router(health.router)
    for router in (settlements.router, codes.router, flags.router, admin.router,
                   listings.router, nhsa.router, drugs.router):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.entry = [
        Middleware(AccessLog),  # outermost: a refused body is logged and carries the id too
        Middleware(InFlightLimit, max_in_flight=settings.api_max_in_flight,
                   target_s=settings.api_shed_above_ms / 1000),
        Middleware(FastLane, fastapi=app, max_body_bytes=settings.max_body_bytes),
    ]
    _document_lean_bodies(app)
    return app


class _Service(FastAPI):
    """FastAPI with an entry in front of its own middleware stack. Every call passes the
    access log and the in-flight limit (which log and count every call alike); the hot routes
    leave by their lane there, before FastAPI's error, exception-telemetry and body-limit
    layers and the app's own middleware (each a coroutine and a wrapped `send` a call:
    together more CPU a settlement than the lane's routing). The lane renders every error
    with the app's handlers, as those layers would."""

    entry: Sequence[Middleware] = ()  # outermost first

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, args, options in reversed(self.entry):
            app = cls(app, *args, **options)
        return app


def _document_lean_bodies(app: FastAPI) -> None:
    """The hot routes decode msgspec structs; their schemas join the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(components(Settlement, ReversalRequest, VerifyRequest))
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def production_app() -> FastAPI:
    """`tracegate api`'s app factory: uvicorn calls it in each worker process, after which
    the process only serves requests (so its start-up objects leave the collector's sight).
    Each worker is a process of its own, so it configures its logging here."""
    settings = Settings()
    configure_logging(settings.log_level)
    settings.require_secrets(API_SECRETS)
    app = create_app(settings)
    tune_for_throughput()
    return app


def _console_sampler(clients: Clients) -> AbstractAsyncContextManager[Sampler]:
    """The console's charts sample this process's own metrics and every consumer's."""

    async def own() -> str:
        return clients.metrics.render().decode()

    settings = clients.settings
    return sampling(own, settings.metrics_urls, settings.console_sample_interval_s)


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
