"""Running a process's main coroutine on uvloop where it is installed (Linux, macOS): the
consumers spend a good share of their time in the event loop, and libuv's is cheaper."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop
        return asyncio.run(main)
    return uvloop.run(main)
