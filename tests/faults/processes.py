"""The processes a fault test starts and hurts: `tracegate consume` children configured only by
TRACEGATE_* variables (as `tracegate dev` configures them), killed with SIGKILL and started
again; servers of the test's own, suspended with SIGSTOP/SIGCONT, stopped, restarted on the
same port. Everything started here is stopped by `stop()`/`close()`, also when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from cli.devstack.process import ChildProcess, spawn
from cli.devstack.servers import (
    KafkaHandle,
    PostgresHandle,
    RedisHandle,
    ServerHandle,
    start_kafka,
    start_postgres,
    start_redis,
)
from cli.migrate import upgrade_to_head
from service.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def tracegate_env(settings: Settings) -> dict[str, str]:
    """The environment of a production process joining `settings`' servers and topics; no
    TRACEGATE_* variable of ours leaks into it."""
    values = {
        "ENV": settings.env.value,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TOPIC_SETTLEMENTS": settings.topic_settlements,
        "TOPIC_FLAGS": settings.topic_flags,
        "TOPIC_DLQ": settings.topic_dlq,
        "SETTLEMENTS_PARTITIONS": str(settings.settlements_partitions),
        "CONSUMER_GROUP": settings.consumer_group,
        "CONSUMER_MAX_BATCH": str(settings.consumer_max_batch),
        "CONSUMER_FETCH_MAX_WAIT_MS": str(settings.consumer_fetch_max_wait_ms),
        "HOTSET_BUCKET_BITS": str(settings.hotset_bucket_bits),
        "HOTSET_SLOT_GROUPS": str(settings.hotset_slot_groups),
        "DUPLICATE_POLICY": settings.duplicate_policy.value,
        "API_KEY_PEPPER": settings.api_key_pepper.get_secret_value(),
        "PATIENT_HASH_KEY": settings.patient_hash_key.get_secret_value(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    env.update({f"TRACEGATE_{name}": value for name, value in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    # A process that dies of a signal of its own (SIGSEGV in an extension) leaves the Python
    # stacks of every thread in its log: seen once, a consumer stopping on SIGTERM (exit -11).
    env["PYTHONFAULTHANDLER"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _await_sigterm_caught(child: ChildProcess, timeout_s: float = 5.0) -> None:
    """Until the child catches SIGTERM (its `SigCgt` in /proc): before that the interpreter
    itself is still starting (~50 ms, no code of ours has run), and a stop there is death by
    the signal. A scenario that restarts a consumer and, its work already done, stops it at
    once must stop a process that has started."""
    deadline = time.monotonic() + timeout_s
    while child.alive() and time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:
            return
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.01)


class ConsumerProcess:
    """One `tracegate consume` child. `kill()` is kill -9; `start()` again is the restart."""

    def __init__(self, name: str, settings: Settings, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._env = tracegate_env(settings)
        self._child: ChildProcess | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        assert self._child is None or not self._child.alive(), f"{self.name} is running"
        self._child = spawn(
            self.name, [sys.executable, "-m", "cli.main", "consume"], log_path=self.log_path,
            env=self._env, cwd=PROJECT_ROOT, grace_seconds=20.0,
        )
        self.starts += 1
        _await_sigterm_caught(self._child)

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing of the process runs after it."""
        assert self._child is not None, f"{self.name} was never started"
        assert self._child.alive(), f"{self.name} died by itself"
        os.kill(self._child.pid, signal.SIGKILL)
        self._child.popen.wait()
        self._child.stop()  # reaps anything left in its group
        self.kills += 1

    def stop(self) -> int | None:
        """SIGTERM (the consumer finishes its batch and leaves the group), then SIGKILL after the
        grace period; the exit code (0 for a clean stop). Idempotent."""
        if self._child is None:
            return None
        self._child.stop()
        return self._child.returncode

    def cpu_seconds(self) -> float:
        """CPU time the running process has used (user + system)."""
        assert self._child is not None, f"{self.name} was never started"
        stat = Path(f"/proc/{self._child.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def suspended(server: ServerHandle) -> Iterator[None]:
    """SIGSTOP the server (and its children) for the block: its sockets stay open but nothing
    answers, as with a hung host. SIGCONT afterwards, whatever happens."""
    pids = server.pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


class OwnServers:
    """Servers started for one scenario, so it may stop, suspend and restart them without
    touching the session's. `close()` stops whatever is running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.postgres: PostgresHandle | None = None
        self.redis: RedisHandle | None = None
        self.kafka: KafkaHandle | None = None

    def start_postgres(self) -> PostgresHandle:
        self.postgres = start_postgres(self.workdir / "postgres", ephemeral=True)
        upgrade_to_head(self.postgres.url)
        return self.postgres

    def stop_postgres(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the data stays. Its backends are frozen
        first and woken only once the postmaster has told them to end, so a transaction open
        at the call is rolled back, never committed in the meantime."""
        assert self.postgres is not None
        backends = self.postgres.process.descendants()
        for pid in backends:
            # a backend whose client disconnected since it was listed has nothing to commit
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            os.kill(self.postgres.pid, signal.SIGINT)
            time.sleep(0.2)  # the postmaster signals every backend, which find it on waking
        finally:
            for pid in backends:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self.postgres.stop()

    def restart_postgres(self) -> PostgresHandle:
        """Start again on the same data directory and port."""
        assert self.postgres is not None
        old = self.postgres
        self.postgres = start_postgres(old.data_dir, old.port, ephemeral=True)
        return self.postgres

    def start_redis(self) -> RedisHandle:
        self.redis = start_redis(self.workdir / "redis")
        return self.redis

    def kill_redis(self) -> None:
        """SIGKILL: it keeps nothing on disk, so everything it held is gone."""
        assert self.redis is not None
        os.kill(self.redis.pid, signal.SIGKILL)
        self.redis.stop()

    def restart_redis(self) -> RedisHandle:
        assert self.redis is not None
        self.redis = start_redis(self.workdir / "redis", self.redis.port)
        return self.redis

    def start_kafka(self) -> KafkaHandle:
        self.kafka = start_kafka(log_path=self.workdir / "kafka.log")
        return self.kafka

    def close(self) -> None:
        for server in (self.kafka, self.redis, self.postgres):
            if server is not None:
                server.stop()


@contextlib.asynccontextmanager
async def own_servers(workdir: Path) -> AsyncIterator[OwnServers]:
    """A scenario's own servers (start those it needs), all stopped on the way out."""
    servers = OwnServers(workdir)
    try:
        yield servers
    finally:
        await asyncio.to_thread(servers.close)
