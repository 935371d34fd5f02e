"""The servers the test suite runs against: the ones named by TRACEGATE_TEST_DATABASE_URL,
TRACEGATE_TEST_REDIS_URL and TRACEGATE_TEST_KAFKA_BOOTSTRAP when set (CI with real services),
otherwise embedded ones started once per session on free ports, tuned for speed over
durability. TRACEGATE_TEST_REDIS_CLUSTER=N runs the suite on a Redis Cluster of N primaries
instead of one Redis (started here, or the one TRACEGATE_TEST_REDIS_URL names a node of)."""

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

from cli.devstack.servers import (
    ServerHandle,
    start_kafka,
    start_postgres,
    start_redis,
    start_redis_cluster,
)
from service.kit.redis_client import RedisClient, build_redis
from service.settings import Settings


@dataclass
class TestServers:
    __test__: ClassVar[bool] = False  # a helper, not a test class for pytest to collect

    database_url: str
    redis_url: str
    kafka_bootstrap: str
    redis_cluster: bool = False
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
        primaries = cluster_primaries()
        redis_url = os.environ.get("TRACEGATE_TEST_REDIS_URL") or (
            _own_cluster(handles, tmp / "redis-cluster", primaries) if primaries
            else _own(handles, lambda: start_redis(tmp / "redis"))
        )
        kafka_bootstrap = os.environ.get("TRACEGATE_TEST_KAFKA_BOOTSTRAP") or _own(
            handles, lambda: start_kafka(log_path=tmp / "kafka.log")
        )
    except BaseException:
        TestServers("", "", "", handles=handles).stop()
        raise
    return TestServers(database_url, redis_url, kafka_bootstrap, bool(primaries), handles)


CLUSTER_ENV = "TRACEGATE_TEST_REDIS_CLUSTER"


def cluster_primaries() -> int:
    """How many Redis Cluster primaries the suite runs on; 0 for a single Redis."""
    value = os.environ.get(CLUSTER_ENV, "").strip()
    if value in ("", "0"):
        return 0
    primaries = int(value)
    if primaries < 3:  # Redis Cluster needs a majority of primaries to agree
        raise ValueError(f"{CLUSTER_ENV}={value}: a Redis Cluster needs at least 3 primaries")
    return primaries


def _own_cluster(handles: list[ServerHandle], data_dir: Path, primaries: int) -> str:
    cluster = start_redis_cluster(data_dir, primaries)
    handles.extend(cluster.nodes)
    return cluster.url


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


def redis_client(settings: Settings) -> RedisClient:
    """A test's own client of the suite's Redis: a cluster client when the suite runs on one
    (a plain client of one node would be sent MOVED for most keys)."""
    return build_redis(settings.redis_url, cluster=settings.redis_cluster)
