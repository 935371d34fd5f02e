"""The console's charts over the last hour, from Prometheus text: each scrape of each process
becomes a `Reading` (the few figures the charts need), successive readings of one process
become a `Point` of rates and quantiles, and the points of all processes at one tick are
summed into the ring buffer the series endpoint reads. Nothing here touches the record: the
hot tables hold billions of rows, the processes already count what the charts show.

Metric names (issue 17, item 4): tracegate_codes_processed_total, tracegate_flags_total{kind},
tracegate_gate_request_seconds (histogram), tracegate_consumer_lag{partition},
tracegate_dlq_total{reason}, tracegate_hot_set_codes."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

CODES = "tracegate_codes_processed_total"
FLAGS = "tracegate_flags_total"
GATE_BUCKETS = "tracegate_gate_request_seconds_bucket"
LAG = "tracegate_consumer_lag"
DLQ = "tracegate_dlq_total"
HOT_SET = "tracegate_hot_set_codes"

WINDOW_S = 3600.0


@dataclass(slots=True)
class Reading:
    """One process's figures at one scrape: counters as they stand (not rates), gauges."""

    at: float
    codes: float = 0.0
    flags: dict[str, float] = field(default_factory=dict)
    gate_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    lag: dict[str, float] = field(default_factory=dict)
    dlq: float | None = None
    hot_set: float | None = None
    has_codes: bool = False


def read_text(text: str, at: float) -> Reading:
    """The chart figures in one Prometheus text exposition (labels the charts do not split
    by are summed: the gate over routes and decisions, the DLQ over reasons)."""
    reading = Reading(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            _take(reading, sample.name, sample.labels, float(sample.value))
    return reading


def _take(reading: Reading, name: str, labels: dict[str, str], value: float) -> None:
    if name == CODES:
        reading.codes += value
        reading.has_codes = True
    elif name == FLAGS:
        kind = labels.get("kind", "")
        reading.flags[kind] = reading.flags.get(kind, 0.0) + value
    elif name == GATE_BUCKETS:
        le = float(labels.get("le", "+Inf"))
        reading.gate_buckets[le] = reading.gate_buckets.get(le, 0.0) + value
    elif name == LAG:
        partition = labels.get("partition", "")
        reading.lag[partition] = max(value, reading.lag.get(partition, value))
    elif name == DLQ:
        reading.dlq = (reading.dlq or 0.0) + value
    elif name == HOT_SET:
        reading.hot_set = max(value, reading.hot_set or value)


def increase(now: float, before: float) -> float:
    """A counter's increase between two scrapes; a drop means the process restarted (its
    counters began again from zero), so everything it counts now is new."""
    return now - before if now >= before else now


@dataclass(slots=True)
class Delta:
    """What one process did between two of its readings."""

    seconds: float
    codes: float | None
    flags: dict[str, float]
    gate_buckets: dict[float, float]


def delta(now: Reading, before: Reading) -> Delta:
    bucket_drop = any(now.gate_buckets.get(le, 0.0) < n for le, n in before.gate_buckets.items())
    return Delta(
        seconds=max(now.at - before.at, 1e-9),
        codes=increase(now.codes, before.codes) if now.has_codes else None,
        flags={k: increase(v, before.flags.get(k, 0.0)) for k, v in now.flags.items()},
        gate_buckets={le: n if bucket_drop else n - before.gate_buckets.get(le, 0.0)
                      for le, n in now.gate_buckets.items()},
    )


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts: linear within the
    bucket the rank falls in; the highest finite bound when it falls in +Inf; None when
    nothing was observed."""
    edges = sorted(buckets.items())
    total = edges[-1][1] if edges else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in edges:
        if count >= rank:
            if math.isinf(upper):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (upper - lower) * share
        lower, below = upper, count
    return lower


@dataclass(slots=True)
class Point:
    """Every process summed at one tick."""

    at: float
    codes_per_s: float | None
    flags_per_s: dict[str, float]
    gate_p50_ms: float | None
    gate_p99_ms: float | None
    lag: dict[str, float]
    dlq_total: float | None
    hot_set_codes: float | None


def combine(at: float, readings: Sequence[Reading], deltas: Sequence[Delta]) -> Point:
    """One point from each process's latest reading (gauges) and last delta (rates)."""
    codes = [d.codes / d.seconds for d in deltas if d.codes is not None]
    flags: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for d in deltas:
        for kind, n in d.flags.items():
            flags[kind] = flags.get(kind, 0.0) + n / d.seconds
        for le, n in d.gate_buckets.items():
            buckets[le] = buckets.get(le, 0.0) + n
    lag: dict[str, float] = {}
    for reading in readings:
        for partition, value in reading.lag.items():
            lag[partition] = max(value, lag.get(partition, value))
    return Point(at, sum(codes) if codes else None, flags, _ms(quantile(0.5, buckets)),
                 _ms(quantile(0.99, buckets)), lag, _sum(r.dlq for r in readings),
                 _sum(r.hot_set for r in readings))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class SeriesBuffer:
    """The last hour of points, oldest first."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.points: deque[Point] = deque(maxlen=max(2, math.ceil(WINDOW_S / interval_s)))

    def add(self, point: Point) -> None:
        self.points.append(point)

    def columns(self) -> dict[str, Any]:
        """Column-wise (what chart libraries take): one time axis, one list per series, null
        where a point has no value (a process not up yet, a partition not assigned)."""
        points = list(self.points)
        return {
            "interval_s": self.interval_s, "window_s": WINDOW_S,
            "t": [p.at for p in points],
            "codes_per_s": [_round(p.codes_per_s) for p in points],
            "flags_per_s": _by_label(points, lambda p: p.flags_per_s),
            "gate_p50_ms": [p.gate_p50_ms for p in points],
            "gate_p99_ms": [p.gate_p99_ms for p in points],
            "consumer_lag": _by_label(points, lambda p: p.lag),
            "dlq_total": [p.dlq_total for p in points],
            "hot_set_codes": [p.hot_set_codes for p in points],
        }


def _by_label(points: list[Point], pick: Any) -> dict[str, list[float | None]]:
    labels = sorted({label for point in points for label in pick(point)}, key=_natural)
    return {label: [_round(pick(point).get(label)) for point in points] for label in labels}


def _natural(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (1 << 30, label)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
