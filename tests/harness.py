"""The servers the test suite runs against: the ones named by TRACEGATE_TEST_DATABASE_URL,
TRACEGATE_TEST_REDIS_URL and TRACEGATE_TEST_KAFKA_BOOTSTRAP when set (CI with real services),
otherwise embedded ones started once per session on free ports, tuned for speed over
durability."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cli.devstack.servers import ServerHandle, start_kafka, start_postgres, start_redis


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
