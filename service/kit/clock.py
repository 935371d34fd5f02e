"""Time in one place: aware UTC everywhere inside; Asia/Shanghai only where the contract reads
local time."""

from __future__ import annotations

import datetime as dt

# China has kept UTC+08:00 without daylight saving since 1991, so a fixed offset is exact for
# every date this service handles and needs no tz database on the host.
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def local_midnight(day: dt.date) -> dt.datetime:
    """The instant a calendar day starts in Asia/Shanghai."""
    return dt.datetime.combine(day, dt.time.min, tzinfo=SHANGHAI)
