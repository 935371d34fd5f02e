"""Session fixtures: the embedded servers start once per run on free ports (or the servers named
by TRACEGATE_TEST_* are used), migrations run once, and every test isolates itself by using
its own institutions, settlement ids and trace codes (see tests/factories.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI

from cli.devstack.servers import create_topics
from cli.migrate import upgrade_to_head
from consumers.runner import consume
from service.api.app import create_app
from service.settings import Settings
from tests.harness import TestServers, start_test_servers

ADMIN_KEY = "tg_test_admin_" + secrets.token_hex(8)
# The suite runs on development secrets; outside `dev` a process refuses them (settings.py).
os.environ.setdefault("TRACEGATE_ENV", "dev")


@pytest.fixture(scope="session", autouse=True)
def _structlog_through_stdlib() -> None:
    """The in-process apps' structlog lines (the access log) go to stdlib logging, as in every
    tracegate process, so pytest captures them (caplog) instead of structlog's default printing
    them onto stdout; the processes' own JSON set-up (configure_logging) is not applied, since it
    would take over pytest's handlers."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The process's logging put back as it was (pytest's handlers, the set-up above) after a
    test that configures it, as configure_logging and every command's `main` do."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level
        structlog.configure(**config)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServers]:
    running = start_test_servers(Path(tmp_path_factory.mktemp("servers")))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def settings(servers: TestServers) -> Settings:
    run = secrets.token_hex(3)
    settings = Settings(
        database_url=servers.database_url, redis_url=servers.redis_url,
        redis_cluster=servers.redis_cluster, kafka_bootstrap=servers.kafka_bootstrap,
        topic_settlements=f"test.{run}.settlements", topic_flags=f"test.{run}.flags",
        topic_dlq=f"test.{run}.dlq", consumer_group=f"test-{run}",
        bootstrap_admin_key=ADMIN_KEY,
    )
    upgrade_to_head(settings.database_url)
    create_topics(settings.kafka_bootstrap, settings.topic_settlements, settings.topic_flags,
                  settings.topic_dlq, settings.settlements_partitions)
    return settings


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tracegate") as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
async def consumer(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    """One consumer process's loop, in this event loop, for the whole session."""
    stop = asyncio.Event()
    task = asyncio.create_task(consume(settings, stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture(scope="session")
async def live_api(app: FastAPI) -> AsyncIterator[str]:
    """The same app behind a real uvicorn socket, for what ASGITransport cannot do (SSE)."""
    async with serving(app) as url:
        yield url


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` (its lifespan already running) behind uvicorn on a free loopback port, in this
    event loop; yields its base URL."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
