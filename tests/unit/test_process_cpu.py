"""The CPU a process tree spent, counting children that ended and were reaped inside the window
(the rebuild's PostgreSQL backend disconnects before the benchmark reads PostgreSQL's CPU)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cli.devstack.process import cpu_seconds, tree_cpu_seconds

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_a_child_that_ended_still_counts() -> None:
    # sh waits for its child (reaps it), then sleeps: the child's CPU is in sh's total only
    parent = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; sleep 30', BUSY])
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    try:
        before = tree_cpu_seconds(parent.pid)
        deadline = time.monotonic() + 30
        while _children(children) != ["sleep"] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the busy child has ended and sh runs `sleep`
        assert _children(children) == ["sleep"]
        assert tree_cpu_seconds(parent.pid) - before >= 0.25
        assert cpu_seconds(parent.pid) < 0.1  # by live pids alone it would be lost
    finally:
        parent.kill()
        parent.wait()


def _children(listing: Path) -> list[str]:
    names = []
    for pid in listing.read_text().split():
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names
