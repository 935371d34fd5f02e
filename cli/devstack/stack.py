"""`tracegate dev` (CONTRACT §6): the servers, the migration, the API and the consumers on one
machine, supervised until Ctrl-C or SIGTERM, after which nothing of it is left running."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from cli.devstack.errors import DevStackError, PortInUseError, ServerStartError
from cli.devstack.process import LOOPBACK, ChildProcess, ensure_port_free, free_port, spawn
from cli.devstack.servers import (
    KafkaHandle,
    PostgresHandle,
    RedisClusterHandle,
    RedisHandle,
    ServerHandle,
    create_topics,
    start_kafka,
    start_postgres,
    start_redis,
    start_redis_cluster,
)
from cli.devstack.state import (
    Secrets,
    load_ports,
    load_secrets,
    remove_stack_files,
    save_ports,
    write_stack_files,
)

if TYPE_CHECKING:
    from service.settings import Settings

S = TypeVar("S", bound=ServerHandle)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_READY_TIMEOUT = 90.0
_MIGRATE_TIMEOUT = 300.0
_POLL = 0.2


class _StopRequested(BaseException):
    """Raised from the SIGINT/SIGTERM handler, so a stop request interrupts any wait
    (startup included) and unwinds through the `finally` that stops everything."""


@dataclass(frozen=True)
class StackShape:
    """How big the stack is: consumer processes, Redis Cluster primaries (0: one Redis) and
    partitions of every topic (None: the settings' for settlements, 1 for the others)."""

    consumers: int = 1
    redis_primaries: int = 0
    partitions: int | None = None


def run_dev_stack(state_dir: Path | None, shape: StackShape, demo: bool) -> int:
    """Run the stack until Ctrl-C/SIGTERM (exit 0) or until a part of it dies (exit 1)."""
    with _stop_signals(), _state_directory(state_dir) as directory:
        stack = DevStack(directory, shape, ephemeral=state_dir is None)
        try:
            stack.start()
            if demo:
                stack.start_demo()
            return stack.supervise()
        except _StopRequested:
            return 0
        except DevStackError as exc:
            _say(f"tracegate dev: {exc}", stream=sys.stderr)
            return 1
        finally:
            stack.stop()


class DevStack:
    """The servers and child processes of one `tracegate dev` run."""

    def __init__(self, state_dir: Path, shape: StackShape, *, ephemeral: bool) -> None:
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.shape = shape
        self.consumer_count = max(0, shape.consumers)
        self.ephemeral = ephemeral
        self.servers: list[ServerHandle] = []
        self.children: list[ChildProcess] = []
        self.timings: dict[str, float] = {}
        self.env: dict[str, str] = {}
        # Each consumer's own metrics port (its process only; stack.env names none of them, so
        # a consumer started by hand from it picks a free one).
        self.consumer_metrics_ports: dict[str, int] = {}
        self.description: dict[str, Any] = {}
        self.stack_json = state_dir / "stack.json"
        self.cluster: RedisClusterHandle | None = None

    # --- startup -------------------------------------------------------------------------------

    def start(self) -> None:
        begin = time.monotonic()
        remove_stack_files(self.state_dir)  # left over if a previous run was killed
        self.logs.mkdir(parents=True, exist_ok=True)
        settings = _settings()  # before anything starts: a bad variable is the first thing to say
        secrets = load_secrets(self.state_dir)
        postgres, redis, kafka = self._start_servers()
        self.env = self._stack_env(settings, (postgres, redis, kafka), secrets)
        self._migrate()
        self._start_processes()
        self._wait_ready()
        self._publish(secrets)
        self.timings["total"] = time.monotonic() - begin
        self._announce()

    def _start_servers(self) -> tuple[PostgresHandle, RedisHandle, KafkaHandle]:
        ports = load_ports(self.state_dir)
        postgres = self._timed("postgres", lambda: start_postgres(
            self.state_dir / "postgres", _reusable(ports.get("postgres")),
            ephemeral=self.ephemeral, log_path=self.logs / "postgres.log",
        ))
        redis = self._start_redis(ports)
        kafka = self._timed("kafka", lambda: start_kafka(
            _reusable(ports.get("kafka")), log_path=self.logs / "kafka.log"
        ))
        return postgres, redis, kafka

    def _start_redis(self, ports: dict[str, int]) -> RedisHandle:
        """One Redis, or a cluster whose first node stands for it (clients find the rest)."""
        if not self.shape.redis_primaries:
            return self._timed("redis", lambda: start_redis(
                self.state_dir / "redis", _reusable(ports.get("redis")),
                log_path=self.logs / "redis.log",
            ))
        begin = time.monotonic()
        # The set is rebuilt from PostgreSQL on every start: a cluster's old node files
        # would name ports and node ids of the last run.
        shutil.rmtree(self.state_dir / "redis-cluster", ignore_errors=True)
        self.cluster = start_redis_cluster(self.state_dir / "redis-cluster",
                                           self.shape.redis_primaries)
        # named apart: stack.json lists each server's pids under its name
        self.servers.extend(replace(node, name=f"redis-node{number}")
                            for number, node in enumerate(self.cluster.nodes, start=1))
        self.timings["redis-cluster"] = time.monotonic() - begin
        return self.cluster.nodes[0]

    def _timed(self, name: str, start: Callable[[], S]) -> S:
        begin = time.monotonic()
        server = start()
        self.servers.append(server)
        self.timings[name] = time.monotonic() - begin
        return server

    def _stack_env(
        self, settings: Settings, servers: tuple[PostgresHandle, RedisHandle, KafkaHandle],
        secrets: Secrets,
    ) -> dict[str, str]:
        postgres, redis, kafka = servers
        begin = time.monotonic()
        partitions = self.shape.partitions or settings.settlements_partitions
        create_topics(
            kafka.url, settings.topic_settlements, settings.topic_flags, settings.topic_dlq,
            partitions, other_partitions=self.shape.partitions or 1,
        )
        self.timings["topics"] = time.monotonic() - begin
        api_port = _reusable(load_ports(self.state_dir).get("api")) or free_port()
        save_ports(self.state_dir, {
            "postgres": postgres.port, "redis": redis.port, "kafka": kafka.port, "api": api_port,
        })
        self.consumer_metrics_ports = {
            f"consumer-{number}": free_port() for number in range(1, self.consumer_count + 1)
        }
        api_url = f"http://{LOOPBACK}:{api_port}"
        return {
            # A development stack, though its secrets are real (generated, kept in the state
            # dir): what joins it with stack.env is told so.
            "TRACEGATE_ENV": "dev",
            "TRACEGATE_DATABASE_URL": postgres.url,
            "TRACEGATE_REDIS_URL": redis.url,
            "TRACEGATE_REDIS_CLUSTER": "true" if self.cluster else "false",
            "TRACEGATE_KAFKA_BOOTSTRAP": kafka.url,
            "TRACEGATE_TOPIC_SETTLEMENTS": settings.topic_settlements,
            "TRACEGATE_TOPIC_FLAGS": settings.topic_flags,
            "TRACEGATE_TOPIC_DLQ": settings.topic_dlq,
            "TRACEGATE_SETTLEMENTS_PARTITIONS": str(partitions),
            "TRACEGATE_CONSUMER_GROUP": settings.consumer_group,
            "TRACEGATE_API_HOST": LOOPBACK,
            "TRACEGATE_API_PORT": str(api_port),
            "TRACEGATE_BOOTSTRAP_ADMIN_KEY": secrets.admin_key,
            "TRACEGATE_API_KEY_PEPPER": secrets.api_key_pepper,
            "TRACEGATE_PATIENT_HASH_KEY": secrets.patient_hash_key,
            # Ready means consuming: a flag must follow a gate answer within a second.
            "TRACEGATE_READY_CONSUMERS": str(self.consumer_count),
            "TRACEGATE_LOG_LEVEL": settings.log_level,
            # For the operator CLI (cli/operator/) and the console's metrics sampler.
            "TRACEGATE_API_URL": api_url,
            "TRACEGATE_API_KEY": secrets.admin_key,
            "TRACEGATE_METRICS_URLS": ",".join(self._metrics_urls(api_url)),
        }

    def _metrics_urls(self, api_url: str) -> list[str]:
        """Every process's /metrics: the API's (all its workers in one scrape), then each
        consumer's own."""
        consumers = [f"http://{LOOPBACK}:{port}/metrics"
                     for port in self.consumer_metrics_ports.values()]
        return [f"{api_url}/metrics", *consumers]

    @property
    def api_url(self) -> str:
        return f"http://{self.env['TRACEGATE_API_HOST']}:{self.env['TRACEGATE_API_PORT']}"

    def _spawn(self, name: str, *args: str, **env: str) -> ChildProcess:
        """`tracegate ARGS` as the child `name`, logging to logs/NAME.log; `env` adds to the
        stack's variables for this child only."""
        child = spawn(
            name, [sys.executable, "-m", "cli.main", *args], log_path=self.logs / f"{name}.log",
            env=_child_environ({**self.env, **env}), cwd=PROJECT_ROOT, grace_seconds=10.0,
        )
        self.children.append(child)
        return child

    def _migrate(self) -> None:
        begin = time.monotonic()
        child = self._spawn("migrate", "migrate")
        try:
            child.popen.wait(_MIGRATE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(
                f"migrations still running after {_MIGRATE_TIMEOUT:.0f}s; see {child.log_path}"
            ) from exc
        if child.returncode != 0:
            raise ServerStartError(
                f"migrations failed (exit code {child.returncode}); last lines of "
                f"{child.log_path}:\n{child.log_tail()}"
            )
        self.children.remove(child)
        self.timings["migrate"] = time.monotonic() - begin

    def _start_processes(self) -> None:
        self._spawn("api", "api")
        for name, port in self.consumer_metrics_ports.items():
            self._spawn(name, "consume", TRACEGATE_CONSUMER_METRICS_PORT=str(port))

    def _wait_ready(self) -> None:
        """Until /readyz says 200; any child exiting meanwhile is the error to show."""
        begin = time.monotonic()
        deadline = begin + _READY_TIMEOUT
        while not _ready(self.api_url):
            for child in self.children:
                if not child.alive():
                    raise child.startup_failure(child.name)
            if time.monotonic() > deadline:
                api = self.children[0]
                raise ServerStartError(
                    f"the API at {self.api_url} was not ready after {_READY_TIMEOUT:.0f}s; "
                    f"last lines of {api.log_path}:\n{api.log_tail()}"
                )
            time.sleep(0.05)
        self.timings["api+consumers"] = time.monotonic() - begin

    def _publish(self, secrets: Secrets) -> None:
        env = self.env
        self.description = {
            "api_url": self.api_url,
            "kafka_bootstrap": env["TRACEGATE_KAFKA_BOOTSTRAP"],
            "redis_url": env["TRACEGATE_REDIS_URL"],
            "redis_cluster": self.cluster is not None,
            "redis_nodes": [node.url for node in self.cluster.nodes] if self.cluster else [],
            "database_url": env["TRACEGATE_DATABASE_URL"],
            "admin_key": secrets.admin_key,
            "topics": {
                "settlements": env["TRACEGATE_TOPIC_SETTLEMENTS"],
                "flags": env["TRACEGATE_TOPIC_FLAGS"],
                "dlq": env["TRACEGATE_TOPIC_DLQ"],
            },
            "consumer_group": env["TRACEGATE_CONSUMER_GROUP"],
            "metrics_urls": env["TRACEGATE_METRICS_URLS"].split(","),
            "state_dir": str(self.state_dir),
            "logs": str(self.logs),
            # Every process of the stack, so tools and tests can check that none outlives it.
            "pids": {
                **{server.name: server.pids for server in self.servers},
                **{child.name: [child.pid] for child in self.children},
            },
            "supervisor_pid": os.getpid(),
        }
        write_stack_files(self.state_dir, self.description, env)

    def start_demo(self) -> None:
        self._spawn("demo", "demo", "--stack", str(self.stack_json))
        _say(f"demo traffic running; its log: {self.logs / 'demo.log'}")

    def _announce(self) -> None:
        t = self.timings
        steps = ", ".join(f"{name} {sec:.2f}s" for name, sec in t.items() if name != "total")
        lines = [
            f"tracegate dev: stack ready in {t['total']:.1f}s ({steps})",
            f"  API          {self.api_url}   (docs {self.api_url}/docs)",
            f"  admin key    {self.description['admin_key']}",
            f"  PostgreSQL   {self.description['database_url']}",
            f"  Redis        {self._redis_line()}",
            f"  Kafka        {self.description['kafka_bootstrap']}   "
            f"topics {', '.join(self.description['topics'].values())}",
            f"  consumers    {self.consumer_count}",
            f"  metrics      {', '.join(self.description['metrics_urls'])}",
            f"  stack files  {self.stack_json}, {self.state_dir / 'stack.env'}",
            f"  logs         {self.logs}/",
            "Ctrl-C stops everything.",
        ]
        _say("\n".join(lines))

    def _redis_line(self) -> str:
        if self.cluster is None:
            return str(self.description["redis_url"])
        ports = ", ".join(str(node.port) for node in self.cluster.nodes)
        return f"{self.cluster.url}   (Redis Cluster, primaries on ports {ports})"

    # --- running and stopping ------------------------------------------------------------------

    def supervise(self) -> int:
        """Watch every process; the first to die ends the stack (a demo that finishes does not)."""
        while True:
            for process in [*self.children, *(server.process for server in self.servers)]:
                if process.alive():
                    continue
                if process.name == "demo" and process.returncode == 0:
                    _say("demo finished; the stack keeps running")
                    self.children.remove(process)
                    break
                _say(
                    f"tracegate dev: {process.name} exited with code {process.returncode}; "
                    f"stopping the stack. Last lines of {process.log_path}:\n{process.log_tail()}",
                    stream=sys.stderr,
                )
                return 1
            time.sleep(_POLL)

    def stop(self) -> None:
        """Children first (in parallel; they flush to the servers), then the servers."""
        with _signals_ignored():
            if self.children or self.servers:
                _say("tracegate dev: stopping…")
            _stop_all(self.children)
            _stop_all([server.process for server in self.servers])
            remove_stack_files(self.state_dir)


def _settings() -> Settings:
    """Topic names, partitions and group follow the caller's TRACEGATE_* overrides."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise DevStackError(f"invalid TRACEGATE_* environment: {exc}") from exc


def _stop_all(processes: list[ChildProcess]) -> None:
    if processes:
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(ChildProcess.stop, processes))


def _reusable(port: int | None) -> int | None:
    """Last run's port if it is free now, else None (a fresh one is chosen)."""
    if port is None:
        return None
    try:
        ensure_port_free(port, "")
    except PortInUseError:
        return None
    return port


def _ready(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/readyz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _child_environ(stack_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **stack_env, "PYTHONUNBUFFERED": "1"}
    # So `python -m cli.main` works from a plain checkout, not only from an installed package.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def _state_directory(state_dir: Path | None) -> Iterator[Path]:
    """The given directory (kept), or a temporary one removed afterwards."""
    if state_dir is not None:
        state_dir = state_dir.expanduser().absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        yield state_dir
        return
    temporary = Path(tempfile.mkdtemp(prefix="tracegate-dev-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _StopRequested(signum)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Shutdown must run to the end: a second Ctrl-C would otherwise strand processes."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str, stream: TextIO | None = None) -> None:
    """The command's user-facing output."""
    out = stream or sys.stdout
    out.write(text + "\n")
    out.flush()
