"""The servers the test suite runs against: the ones named by TRACEGATE_TEST_DATABASE_URL,
TRACEGATE_TEST_REDIS_URL and TRACEGATE_TEST_KAFKA_BOOTSTRAP when set (CI with real services),
otherwise embedded ones started once per session on free ports, tuned for speed over
durability."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import asyncpg
from sqlalchemy.engine import make_url

from cli.devstack.servers import ServerHandle, start_kafka, start_postgres, start_redis
from service.settings import Settings


@dataclass
class TestServers:
    __test__: ClassVar[bool] = False  # a helper, not a test class for pytest to collect

    database_url: str
    redis_url: str
    kafka_bootstrap: str
    # Only the servers we started; servers named by the environment are not ours to stop.
    handles: list[ServerHandle] = field(default_factory=list)

    def stop(self) -> None:
        for handle in reversed(self.handles):
            handle.stop()


def start_test_servers(tmp: Path) -> TestServers:
    handles: list[ServerHandle] = []
    try:
        database_url = os.environ.get("TRACEGATE_TEST_DATABASE_URL") or _own(
            handles, lambda: start_postgres(tmp / "postgres", ephemeral=True)
        )
        redis_url = os.environ.get("TRACEGATE_TEST_REDIS_URL") or _own(
            handles, lambda: start_redis(tmp / "redis")
        )
        kafka_bootstrap = os.environ.get("TRACEGATE_TEST_KAFKA_BOOTSTRAP") or _own(
            handles, lambda: start_kafka(log_path=tmp / "kafka.log")
        )
    except BaseException:
        TestServers("", "", "", handles).stop()
        raise
    return TestServers(database_url, redis_url, kafka_bootstrap, handles)


def _own(handles: list[ServerHandle], start: Callable[[], ServerHandle]) -> str:
    handle = start()
    handles.append(handle)
    return handle.url


@asynccontextmanager
async def scratch_database(settings: Settings) -> AsyncIterator[Settings]:
    """A database of its own on the session's server (a downgrade must not empty the
    session's), dropped afterwards."""
    name = f"tracegate_scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(settings.database_url).set(database=name)
        # not model_copy: it would keep the cached asyncpg_dsn of the session's database
        yield Settings(**settings.model_dump() | {"database_url": url.render_as_string(False)})
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
