"""`tracegate consume --check`, the consumer's container healthcheck: healthy while the
consumer's loop turns (it touches TRACEGATE_CONSUMER_HEARTBEAT_FILE), unhealthy once it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli.devstack.process import spawn
from service.settings import Settings
from tests.faults.processes import PROJECT_ROOT, tracegate_env


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "consume", "--check"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


def test_check_follows_the_heartbeat(settings: Settings, tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    env = tracegate_env(settings) | {"TRACEGATE_CONSUMER_HEARTBEAT_FILE": str(beat),
                                     "TRACEGATE_CONSUMER_HEARTBEAT_MAX_AGE_S": "3"}
    assert _check(env).returncode == 1  # not started: no heartbeat yet
    consumer = spawn("consumer", [sys.executable, "-m", "cli.main", "consume"],
                     log_path=tmp_path / "consumer.log", env=env, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 60
        while (result := _check(env)).returncode != 0:
            assert consumer.alive(), consumer.log_tail()
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.5)
        assert "healthy" in result.stdout
        os.kill(consumer.pid, signal.SIGSTOP)  # hung: alive, but its loop no longer turns
        time.sleep(4.5)
        stale = _check(env)
        assert stale.returncode == 1
        assert "last heartbeat" in stale.stderr
    finally:
        os.kill(consumer.pid, signal.SIGCONT)
        consumer.stop()


def test_check_without_a_heartbeat_file_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    result = _check(env)
    assert result.returncode == 2
    assert "TRACEGATE_CONSUMER_HEARTBEAT_FILE" in result.stderr
