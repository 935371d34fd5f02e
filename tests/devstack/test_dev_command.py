"""`tracegate dev --state-dir DIR` end to end, as a developer runs it: the stack comes up ready,
Ctrl-C leaves no process of it behind, and a second run on the same directory (warm start)
keeps the admin key valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.devstack.test_servers import running

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def start_dev(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cli.main", "dev", "--state-dir", str(state_dir),
           "--consumers", "1"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_for_stack(process: subprocess.Popen[bytes], state_dir: Path, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    stack_json = state_dir / "stack.json"
    while not stack_json.exists():
        assert process.poll() is None, f"tracegate dev exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no stack.json after 180s:\n{log.read_text()}"
        time.sleep(0.1)
    description: dict[str, Any] = json.loads(stack_json.read_text())
    return description


def get(url: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


def stop_dev(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, log.read_text()


def stack_processes(description: dict[str, Any], state_dir: Path) -> list[str]:
    """Every live process that belongs to the stack: by recorded pid, or by naming the state dir
    or the stack's ports in its command line or environment."""
    recorded = {pid for pids in description["pids"].values() for pid in pids}
    recorded.add(description["supervisor_pid"])
    markers = [str(state_dir).encode(), description["kafka_bootstrap"].encode()]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if running(pid) and (pid in recorded or _mentions(entry, markers)):
            command = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {command}")
    return found


def _mentions(proc_dir: Path, markers: list[bytes]) -> bool:
    text = _read(proc_dir / "cmdline") + _read(proc_dir / "environ")
    return any(marker in text for marker in markers)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_dev_runs_stops_cleanly_and_restarts_warm(tmp_path: Path) -> None:
    state_dir, log = tmp_path / "state", tmp_path / "dev.log"
    first = run_once(state_dir, log)
    assert (state_dir / "postgres" / "PG_VERSION").exists()
    assert not (state_dir / "stack.json").exists()  # describes a running stack only

    second = run_once(state_dir, log)
    assert second["admin_key"] == first["admin_key"]


def run_once(state_dir: Path, log: Path) -> dict[str, Any]:
    process = start_dev(state_dir, log)
    try:
        description = wait_for_stack(process, state_dir, log)
        check_running_stack(description, state_dir)
    finally:
        stop_dev(process, log)
    assert stack_processes(description, state_dir) == []
    return description


def check_running_stack(description: dict[str, Any], state_dir: Path) -> None:
    status, body = get(f"{description['api_url']}/readyz")
    assert status == 200
    # Ready means consuming: the stack's consumer holds the settlements partitions.
    assert body["checks"] == {"redis": "ok", "postgres": "ok", "kafka": "ok", "consumers": "ok"}
    # The admin key works (it stays valid across restarts: same key, same pepper).
    status, _ = get(f"{description['api_url']}/v1/flags?limit=1", description["admin_key"])
    assert status == 200
    env = dict(
        line.split("=", 1) for line in (state_dir / "stack.env").read_text().splitlines()
    )
    assert env["TRACEGATE_DATABASE_URL"] == description["database_url"]
    assert env["TRACEGATE_KAFKA_BOOTSTRAP"] == description["kafka_bootstrap"]
    assert set(description["topics"]) == {"settlements", "flags", "dlq"}
    check_observability(description, env, state_dir)


def check_observability(description: dict[str, Any], env: dict[str, str], state_dir: Path
                        ) -> None:
    """Every process's metrics URL is listed (the API's, then the one consumer's) and answers;
    each process keeps its JSON log in the state dir; the operator CLI finds the API."""
    urls = description["metrics_urls"]
    assert env["TRACEGATE_METRICS_URLS"].split(",") == urls
    assert urls[0] == f"{description['api_url']}/metrics"
    assert len(urls) == 2
    texts = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            assert response.status == 200
            texts.append(response.read().decode())
    # The API's gate histogram has no series before a gate call; the consumer's has its own.
    assert "# TYPE tracegate_consumer_batch_seconds histogram" in texts[1]
    assert (env["TRACEGATE_API_URL"], env["TRACEGATE_API_KEY"]) == (
        description["api_url"], description["admin_key"])
    for name in ("api", "consumer-1"):
        lines = (state_dir / "logs" / f"{name}.log").read_text().splitlines()
        assert lines
        assert all(json.loads(line)["level"] for line in lines if line.strip())
    assert (state_dir / "logs" / "postgres.log").exists()
