"""The servers a benchmark runs against: embedded PostgreSQL (ephemeral: no fsync), Redis and
Tansu on loopback, migrated, with the workload's institutions registered. Everything started
here is stopped by `close()` (also on error), and so are the tracegate processes it spawned."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg

from cli.devstack.process import ChildProcess, free_port, spawn
from cli.devstack.servers import (
    PostgresHandle,
    ServerHandle,
    ensure_topics,
    start_kafka,
    start_postgres,
    start_redis,
    start_redis_cluster,
)
from cli.migrate import upgrade_to_head
from loadtest.workload import Institution

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "loadtest-admin-key-0123456789abcdef"
_KEEP = ("alembic_version", "institutions", "api_keys")


@dataclass
class Stack:
    tmp: Path
    postgres: PostgresHandle
    redis_url: str
    kafka_bootstrap: str
    servers: list[ServerHandle]
    children: list[ChildProcess] = field(default_factory=list)
    redis_cluster: bool = False  # redis_url is then any node of a Redis Cluster

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    def env(self, run: str, **extra: str) -> dict[str, str]:
        """TRACEGATE_* for a tracegate process of run `run` (its own topics and group). A
        development environment: the benchmark runs on the dev secrets."""
        return {
            "TRACEGATE_ENV": "dev",
            "TRACEGATE_DATABASE_URL": self.postgres.url, "TRACEGATE_REDIS_URL": self.redis_url,
            "TRACEGATE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TRACEGATE_REDIS_CLUSTER": str(self.redis_cluster).lower(),
            "TRACEGATE_TOPIC_SETTLEMENTS": f"lt.{run}.settlements",
            "TRACEGATE_TOPIC_FLAGS": f"lt.{run}.flags", "TRACEGATE_TOPIC_DLQ": f"lt.{run}.dlq",
            "TRACEGATE_CONSUMER_GROUP": f"lt.{run}.consumers",
            "TRACEGATE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "TRACEGATE_LOG_LEVEL": "WARNING",
            **extra,
        }

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, python: bool = True,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> ChildProcess:
        """A child in its own session, logging to tmp, remembered so close() stops it."""
        full = {**os.environ, **env, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                              os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, *argv] if python else list(argv)
        child = spawn(name, command, log_path=self.tmp / f"{name}.log", env=full,
                      cwd=PROJECT_ROOT, grace_seconds=10.0, stop_signal=stop_signal)
        self.children.append(child)
        return child

    def stop_children(self) -> None:
        for child in self.children:
            child.stop()
        self.children.clear()

    def close(self) -> None:
        self.stop_children()
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_stack(institutions: Sequence[Institution], redis_primaries: int = 0) -> Stack:
    """The servers; `redis_primaries` > 0: a Redis Cluster of that many primaries instead of
    one Redis, each node a CPU role of its own (redis-1, redis-2, ...)."""
    tmp = Path(tempfile.mkdtemp(prefix="tracegate-loadtest-"))
    servers: list[ServerHandle] = []
    try:
        postgres = start_postgres(tmp / "postgres", ephemeral=True)
        servers.append(postgres)
        redis_url = _start_redis(tmp, redis_primaries, servers)
        servers.append(kafka := start_kafka(log_path=tmp / "kafka.log"))
        upgrade_to_head(postgres.url)
        asyncio.run(register(postgres.dsn, institutions))
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    return Stack(tmp, postgres, redis_url, kafka.url, servers, redis_cluster=redis_primaries > 0)


def _start_redis(tmp: Path, primaries: int, servers: list[ServerHandle]) -> str:
    if not primaries:
        servers.append(redis := start_redis(tmp / "redis"))
        return redis.url
    cluster = start_redis_cluster(tmp / "redis-cluster", primaries)
    servers.extend(replace(node, name=f"redis-{number}")
                   for number, node in enumerate(cluster.nodes, start=1))
    return cluster.url


async def register(dsn: str, institutions: Sequence[Institution]) -> None:
    rows = [(i.institution_id, f"LT {i.institution_id}", i.kind, "loadtest", i.go_live_override)
            for i in institutions]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.executemany(
            "INSERT INTO institutions (institution_id, name, kind, region, go_live_override) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", rows,
        )
    finally:
        await connection.close()


async def reset_record(dsn: str) -> None:
    """Empty every record table but institutions and keys, between runs on one stack."""
    connection = await asyncpg.connect(dsn)
    try:
        names = await connection.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
        tables = [row[0] for row in names if row[0] not in _KEEP]
        await connection.execute(f"TRUNCATE {', '.join(tables)}")
    finally:
        await connection.close()


async def create_topics(stack: Stack, run: str, partitions: int) -> None:
    env = stack.env(run)
    await ensure_topics(stack.kafka_bootstrap, {
        env["TRACEGATE_TOPIC_SETTLEMENTS"]: partitions, env["TRACEGATE_TOPIC_FLAGS"]: 1,
        env["TRACEGATE_TOPIC_DLQ"]: 1,
    })


def api_port() -> int:
    return free_port()


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable: {exc}"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
