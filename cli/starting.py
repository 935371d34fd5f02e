"""A consumer's stop while it is still starting (importing, connecting: a second or so).

It has nothing to finish then, so SIGTERM is a clean exit, not death by the signal; its event
loop's handler (finish the batch, then leave) takes over once it runs. The exit is
`os._exit`, never an exception: Python runs a signal's handler at the next bytecode, which
may be inside an import that a native module's initialisation makes (orjson's imports json,
dataclasses and uuid). An exception there fails that import, orjson's initialisation does
not check, and the process died of SIGSEGV instead of exiting (CI, twice;
tests/unit/test_starting_stop.py makes it happen on purpose). Kept apart from cli/main.py so
that it is installed before anything else is imported."""

from __future__ import annotations

import contextlib
import os
import sys
from types import FrameType


def exit_while_starting(signum: int, frame: FrameType | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a write it interrupted may hold the buffer
            stream.flush()
    os._exit(0)
