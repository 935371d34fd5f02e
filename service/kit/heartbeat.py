"""A heartbeat file: a loop touches it as it turns, a health probe reads its age. What a
container's healthcheck asks of a process with no HTTP port (`tracegate consume --check`)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Heartbeat:
    """Touches `path` at most once every `every_s` (the loop may turn thousands of times a
    second); a heartbeat without a path does nothing."""

    def __init__(self, path: Path | None, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._last = float("-inf")

    def beat(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._last < self.every_s:
            return
        self._last = now
        self.path.touch()
        os.utime(self.path)  # touch() keeps the mtime of an existing file on some platforms


def heartbeat_age_s(path: Path) -> float | None:
    """Seconds since the last beat; None when there never was one."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
