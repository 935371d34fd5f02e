"""Child processes that die with us.

Every server and stack process starts in its own session, so a terminal's Ctrl-C reaches only
`tracegate dev` (which then stops them in order) and `stop()` can kill the whole group. Three
layers make sure nothing outlives us: `stop()` (graceful signal, then SIGKILL of the group and of
every descendant seen), an atexit hook for whatever is still running, and on Linux a
parent-death signal for the case where we are killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cli.devstack.errors import (
    BinaryNotFoundError,
    DevStackError,
    PortInUseError,
    ServerStartError,
)

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a child runs under (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _ProcStamp:
    """A pid plus its start time, so a recycled pid is never mistaken for our process."""

    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


class ChildProcess:
    """One child process (and its group) with an idempotent, thread-safe `stop()`."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path,
        stop_signal: signal.Signals, grace_seconds: float, log_offset: int = 0,
    ) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        # Logs are appended across runs; only this run's part explains this run's failure.
        self.log_offset = log_offset
        self.stop_signal = stop_signal
        self.grace_seconds = grace_seconds
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def descendants(self) -> list[int]:
        """Pids of every live descendant (PostgreSQL backends live in their own sessions)."""
        return [stamp.pid for stamp in _descendant_stamps(self.pid)]

    @property
    def pids(self) -> list[int]:
        """This process's pid and those of its live descendants."""
        return [self.pid, *self.descendants()]

    def stop(self) -> None:
        """Graceful signal, up to `grace_seconds`, then SIGKILL. Safe to call any number of
        times, from any thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._terminate()
        finally:
            _forget(self)

    def _terminate(self) -> None:
        # Snapshot first: once the leader exits its descendants are re-parented out of reach.
        kin = _descendant_stamps(self.pid)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            _wait_exit_unreaped(self.pid, self.grace_seconds)
        # The leader is still an unreaped zombie here, so its group id cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()
        _reap_stragglers(kin, timeout=max(self.grace_seconds, 1.0))

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines, start=self.log_offset)

    def startup_failure(self, what: str, port: int | None = None) -> DevStackError:
        """The error to raise when this child exited while starting (port clash recognised)."""
        tail = self.log_tail()
        if port is not None and "already in use" in tail.lower():
            return PortInUseError(port, what)
        return ServerStartError(
            f"{what} exited with code {self.returncode} while starting; "
            f"last lines of {self.log_path}:\n{tail}"
        )


def spawn(
    name: str, argv: Sequence[str], *, log_path: Path, stop_signal: signal.Signals = signal.SIGTERM,
    grace_seconds: float = 10.0, env: Mapping[str, str] | None = None, cwd: Path | None = None,
    run_as: RunAs | None = None,
) -> ChildProcess:
    """Start `argv` in a new session with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log_path.stat().st_size
        try:
            popen = subprocess.Popen(  # noqa: S603 - argv is built by us, never from input
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=None if env is None else dict(env), cwd=cwd, start_new_session=True,
                preexec_fn=_death_signal_hook(stop_signal),
                user=None if run_as is None else run_as.uid,
                group=None if run_as is None else run_as.gid,
                extra_groups=None if run_as is None else [],
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise BinaryNotFoundError(f"cannot run {argv[0]} for {name}: {exc}") from exc
    child = ChildProcess(name, popen, log_path, stop_signal, grace_seconds, offset)
    _remember(child)
    return child


def wait_until(
    child: ChildProcess, ready: Callable[[], bool], *, what: str, timeout: float,
    port: int | None = None,
) -> None:
    """Poll `ready()` with a short backoff; a child that exits or stays unready is an error."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not ready():
        if not child.alive():
            raise child.startup_failure(what, port)
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} was not ready after {timeout:.0f}s; last lines of {child.log_path}:\n"
                f"{child.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def log_tail(path: Path, lines: int = 25, start: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(start, path.stat().st_size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- ports -------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free on loopback right now (the caller retries if someone takes it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, what: str) -> None:
    # SO_REUSEADDR as the servers use it: a port in TIME_WAIT is fine, a bound one is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise PortInUseError(port, what) from exc


def on_free_port(port: int | None, what: str, start: Callable[[int], T]) -> T:
    """`start(port)` on the given port (which must be free), or on a fresh free port, retried
    when another process grabs it between our probe and the server's bind."""
    if port is not None:
        ensure_port_free(port, what)
        return start(port)
    for attempt in range(_PORT_ATTEMPTS):
        try:
            return start(free_port())
        except PortInUseError:
            if attempt == _PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


# --- /proc -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux, in clock ticks); 0 if it is gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its descendants and every child it has waited for:
    PostgreSQL's postmaster reaps each backend that disconnects, so a backend that ended
    inside a measured window still counts (by `cpu_seconds` of live pids it would not). A
    child that exits is counted as a zombie until it is reaped, then in its parent's total;
    read again if a reap fell between the two."""
    while True:
        reaped = _reaped_seconds(pid)
        if reaped is None:
            return 0.0
        descendants = sum(cpu_seconds(child) for child in _all_descendants(pid))
        if _reaped_seconds(pid) == reaped:
            return cpu_seconds(pid) + reaped + descendants


def _reaped_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[13]) + int(fields[14])) / _TICKS


def _all_descendants(root: int) -> list[int]:
    """Zombies included, unlike `_descendant_stamps`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[19])


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def _descendant_stamps(root: int) -> list[_ProcStamp]:
    if not sys.platform.startswith("linux"):
        return []
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: list[_ProcStamp] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if (ticks := _start_ticks(pid)) is not None:
            found.append(_ProcStamp(pid, ticks))
    return found


def _wait_exit_unreaped(pid: int, timeout: float) -> None:
    """Wait for our child to exit without reaping it (WNOWAIT keeps its pid and group ours)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def _reap_stragglers(kin: list[_ProcStamp], timeout: float) -> None:
    """Give orphaned descendants a moment to notice their parent is gone, then SIGKILL them."""
    deadline = time.monotonic() + timeout
    while any(stamp.alive() for stamp in kin) and time.monotonic() < deadline:
        time.sleep(0.01)
    for stamp in kin:
        if stamp.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stamp.pid, signal.SIGKILL)


# --- parent-death signal ------------------------------------------------------------------


def _death_signal_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec hook asking Linux to send `sig` to the child when we die.

    Only from the main thread: the kernel fires it when the *thread* that forked exits, which
    for a worker thread would stop a server in the middle of its life. It runs after the
    uid switch (a credential change would clear it)."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not on_main_thread:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # we died before the hook ran: nobody will send it
            os.kill(os.getpid(), sig)

    return hook


# --- best-effort cleanup at exit ---------------------------------------------------------------

_live: list[ChildProcess] = []
_live_lock = threading.Lock()


def _remember(child: ChildProcess) -> None:
    with _live_lock:
        _live.append(child)


def _forget(child: ChildProcess) -> None:
    with _live_lock, contextlib.suppress(ValueError):
        _live.remove(child)


def stop_all() -> None:
    """Stop every child still running, newest first (the stack before the servers it uses)."""
    with _live_lock:
        children = list(reversed(_live))
    for child in children:
        child.stop()


atexit.register(stop_all)
