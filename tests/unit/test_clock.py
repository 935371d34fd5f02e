"""epoch_seconds is int(timestamp()) for every aware moment, by its shortcut in fixed-offset
zones (settlement times) and by timestamp() in any other."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from service.kit.clock import SHANGHAI, epoch_seconds

ZONES = [dt.UTC, SHANGHAI, dt.timezone(dt.timedelta(hours=-5)),
         dt.timezone(dt.timedelta(hours=5, minutes=45)), dt.timezone(dt.timedelta(hours=14))]


class _Summer(dt.tzinfo):
    """A zone whose offset changes with the date (as zoneinfo's do): no shortcut for it."""

    def utcoffset(self, moment: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=2 if moment is not None and 4 <= moment.month <= 9 else 1)

    def dst(self, moment: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, moment: dt.datetime | None) -> str:
        return "summer"


@pytest.mark.parametrize("zone", [*ZONES, _Summer()], ids=str)
def test_epoch_seconds_is_the_timestamp_truncated(zone: dt.tzinfo) -> None:
    draw = random.Random(7)
    for _ in range(2_000):
        moment = dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            seconds=draw.randrange(100 * 365 * 86_400), microseconds=draw.randrange(10**6))
        local = moment.astimezone(zone)
        assert epoch_seconds(local) == int(local.timestamp()), local
