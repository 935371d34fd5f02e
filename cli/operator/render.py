"""What operator commands print: tables, times in Asia/Shanghai, JSON when asked."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from tabulate import tabulate

from service.kit.clock import SHANGHAI


def local_time(value: str | None) -> str:
    """An RFC 3339 instant as Asia/Shanghai wall time (`2025-04-02 10:15:00`)."""
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    listed = [list(row) for row in rows]
    out("(none)" if not listed else tabulate(listed, headers=list(headers), tablefmt="simple"))


def json_lines(items: Iterable[Any]) -> None:
    for item in items:
        out(orjson.dumps(item).decode())


def json_document(value: Any) -> None:
    out(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
