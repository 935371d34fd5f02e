"""How big each fault scenario is: a short form for the normal suite (the whole directory well
under three minutes on two cores) and the long form with the issue's figures."""

from __future__ import annotations

import os
from dataclasses import dataclass

SOAK_ENV = "TRACEGATE_SOAK"


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    # 1. crash: codes in the stream, consumer processes killed with SIGKILL
    crash_codes: int
    crash_kills: int
    # 2. Redis loss: codes, FLUSHALLs, SIGKILL + restarts of redis-server
    redis_codes: int
    redis_flushes: int
    redis_restarts: int
    rebuild_recovery_s: float  # the set is whole again this soon after its rebuilder died
    # 3. outages: codes, and how long each server stays away (seconds)
    outage_codes: int
    broker_stop_s: float
    postgres_down_s: float
    redis_stop_s: float
    # codes per second the stream is fed at while faults are injected into it
    feed_rate: float
    # 4. scale-out: codes fed to two consumers (one killed, a third added, a Redis node lost)
    scaleout_codes: int


SHORT = Scale(
    name="short", crash_codes=20_000, crash_kills=3,
    redis_codes=8_000, redis_flushes=1, redis_restarts=1, rebuild_recovery_s=15.0,
    outage_codes=8_000, broker_stop_s=4.0, postgres_down_s=2.0, redis_stop_s=2.0,
    feed_rate=800.0, scaleout_codes=12_000,
)
LONG = Scale(
    name="long", crash_codes=200_000, crash_kills=10,
    redis_codes=60_000, redis_flushes=3, redis_restarts=2, rebuild_recovery_s=20.0,
    outage_codes=40_000, broker_stop_s=10.0, postgres_down_s=5.0, redis_stop_s=5.0,
    feed_rate=1_500.0, scaleout_codes=100_000,
)


def current() -> Scale:
    return LONG if os.environ.get(SOAK_ENV, "") not in ("", "0") else SHORT
