"""`python -m tests.faults.crashing_consumer POINT`: `tracegate consume`, which kills itself
with SIGKILL at POINT of the first batch that reaches it, as a crash there would: nothing of
the process runs after it (no rollback sent, no offsets, no goodbye to the group).

The points, in a batch's order (service/settlements/stream.py, consumers/runner.py):
  read     the first-seen set read, nothing written anywhere
  write    the record written, its transaction not committed
  commit   the record committed, Redis not yet told
  apply    Redis told, the flags not yet published
  publish  the flags published, not yet marked published in the record
  offsets  the batch done, its offsets not committed
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


def _die() -> None:
    sys.stderr.write("crashing_consumer: SIGKILL now\n")
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


def _before_finished_work(
    original: Callable[[runner._Offsets], Awaitable[None]],
) -> Callable[[runner._Offsets], Awaitable[None]]:
    """Offsets are committed on a rebalance too, with nothing finished yet: not that one."""

    @functools.wraps(original)
    async def call(offsets: runner._Offsets) -> None:
        if offsets.done:
            _die()
        await original(offsets)

    return call


# Where each point is: (owner, attribute, how the crash wraps it).
_AT: dict[str, tuple[Any, str, Callable[[Any], Any]]] = {
    "read": (FirstSeenStore, "read", _after),
    "write": (stream, "_write", _after),
    "commit": (stream, "_apply", _before),
    "apply": (stream, "_publish", _before),
    "publish": (repository, "mark_published", _before),
    "offsets": (runner._Offsets, "commit", _before_finished_work),
}


def arm(point: str) -> None:
    if point not in _AT:
        raise SystemExit(f"crash point must be one of {', '.join(POINTS)}, not {point!r}")
    owner, name, wrap = _AT[point]
    setattr(owner, name, wrap(getattr(owner, name)))


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.exit(main(["consume"]))
