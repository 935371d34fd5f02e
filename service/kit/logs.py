"""JSON log lines for every process, configured once at its start (the `tracegate` entry points,
and each uvicorn worker in the API's app factory).

structlog renders every record, its own and the standard library's (uvicorn, aiokafka,
SQLAlchemy, ours), as one JSON object a line on stderr (each line one write), with the
values bound to the current context (the request id of an HTTP call). What must never reach
a line is kept out where it could enter: request bodies, headers and query strings are never
logged (service/api/access_log.py logs method, path, status and latency; uvicorn's own
access log, which writes query strings, stays off), SQLAlchemy's statement echo (parameters
and rows) and httpx's request lines (whole URLs) stay off at any level, and aiokafka's DEBUG
line for every sent message is cut to its key and size (the value of a dead-lettered event
is the insurer's raw input, patient ids included).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Loggers whose records would carry data a log must not hold, at any level: SQLAlchemy's echo
# prints statements with their parameters at INFO and result rows at DEBUG; httpx (the
# operator CLI's and the demo's client) a line per request with its whole URL.
_ALWAYS_QUIET = {"sqlalchemy": logging.WARNING, "httpx": logging.WARNING,
                 "httpcore": logging.WARNING}


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library to one JSON handler at `level` (a logging
    level name). Calling it again replaces the handler, so it is safe in every process."""
    number = logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stderr
    shared = _shared_processors()
    render: list[Processor] = [structlog.processors.format_exc_info,
                               structlog.processors.JSONRenderer(serializer=_dumps)]
    # structlog's own events (the access log, one per HTTP call) are rendered and written
    # straight to the stream: through a stdlib record and formatter they cost ~4x the CPU.
    structlog.configure(
        processors=[*shared, *render],
        logger_factory=lambda *names: _NamedWriter(out, names[0] if names else "tracegate"),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        cache_logger_on_first_use=False,  # so configuring again (a test, a worker) takes hold
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(number)
    _route_library_loggers()
    _hide_sent_values(logging.getLogger("aiokafka.producer.producer"))


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]


class _NamedWriter(structlog.WriteLogger):
    """structlog's plain writer, with the name its events are logged under (as a stdlib
    logger has one)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_pid(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # Several API workers write to one stream: the pid tells their lines apart.
    event["pid"] = os.getpid()
    return event


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _route_library_loggers() -> None:
    """uvicorn and others may have installed handlers of their own: every record goes through
    the root's one JSON handler instead."""
    for name in ("uvicorn", "uvicorn.error", "aiokafka", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # uvicorn's access log writes the query string (where a client may put a key): ours
    # (service/api/access_log.py) replaces it. With no handler to reach, uvicorn does not
    # even format its line.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    for name, floor in _ALWAYS_QUIET.items():
        logging.getLogger(name).setLevel(floor)


class _SentValueHidden(logging.Filter):
    """aiokafka logs `Sending (key=%s value=%s) to %s` at DEBUG for every message: keep the key
    and the partition, replace the value by its size."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 3 and str(
                record.msg).startswith("Sending (key="):
            key, value, partition = record.args
            size = len(value) if isinstance(value, bytes | str) else 0
            record.msg = "Sending (key=%s, a value of %d bytes) to %s"
            record.args = (key, size, partition)
        return True


def _hide_sent_values(logger: logging.Logger) -> None:
    if not any(isinstance(existing, _SentValueHidden) for existing in logger.filters):
        logger.addFilter(_SentValueHidden())
