"""`python -m tests.faults.crashing_consumer POINT [N]`: `tracegate consume`, which kills
itself with SIGKILL the Nth time (1st by default) a batch reaches POINT, as a crash there
would: nothing of the process runs after it (no rollback sent, no offsets, no goodbye to the
group).

The points, in a batch's order (service/settlements/stream.py, consumers/runner.py):
  read     the first-seen set read, nothing written anywhere
  ahead    a batch decided ahead, on the decisions of the one before, which is being written
  write    the record written, its transaction not committed
  commit   the record committed, Redis not yet told
  apply    Redis told, the flags not yet published
  publish  the flags published, not yet marked published in the record
  offsets  the batch done, its offsets stored for the next checkpoint, not committed
From the second batch on, the next batch is being decided while one is at write ... offsets.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from cli.main import main
from consumers import runner
from service.firstseen.store import FirstSeenStore
from service.records import repository
from service.settlements import stream

POINTS = ("read", "write", "commit", "apply", "publish", "offsets")
AHEAD = "ahead"  # only where batches are small enough for one to be decided ahead
_reached = 0
_kill_at = 1


def _die() -> None:
    global _reached
    _reached += 1
    if _reached < _kill_at:
        return
    sys.stderr.write(f"crashing_consumer: SIGKILL now (reached {_reached} times)\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def call(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        _die()
        return result

    return call


def _before(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def call(*args: Any, **kwargs: Any) -> Any:
        _die()
        return await original(*args, **kwargs)

    return call


def _after_stored(
    original: Callable[[runner._Offsets, runner.Offsets], None],
) -> Callable[[runner._Offsets, runner.Offsets], None]:
    """A finished batch's offsets stored: a commit, if one is due, comes next (and at most
    every commit interval: the point is each batch, not each commit)."""

    @functools.wraps(original)
    def call(offsets: runner._Offsets, finished: runner.Offsets) -> None:
        original(offsets, finished)
        _die()

    return call


def _after_ahead(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`prepare` with the batch before's decisions: it returned, that batch is unfinished."""

    @functools.wraps(original)
    async def call(records: Any, ports: Any, after: Any = None) -> Any:
        result = await original(records, ports, after)
        if after is not None:
            _die()
        return result

    return call


# Where each point is: (owner, attribute, how the crash wraps it).
_AT: dict[str, tuple[Any, str, Callable[[Any], Any]]] = {
    "read": (FirstSeenStore, "read_paid", _after),
    AHEAD: (runner, "prepare", _after_ahead),
    "write": (stream, "_write", _after),
    "commit": (stream, "_apply", _before),
    "apply": (stream, "_publish", _before),
    "publish": (repository, "mark_published", _before),
    "offsets": (runner._Offsets, "store", _after_stored),
}


def arm(point: str, occurrence: int = 1) -> None:
    global _kill_at
    if point not in _AT:
        raise SystemExit(f"crash point must be one of {', '.join(_AT)}, not {point!r}")
    owner, name, wrap = _AT[point]
    setattr(owner, name, wrap(getattr(owner, name)))
    _kill_at = occurrence


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    sys.exit(main(["consume"]))
