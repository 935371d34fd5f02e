"""Percentiles and medians for the reports (nearest-rank, so a p99 is an observed value)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [value * 1000 for value in seconds]
    return {
        "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2) if ms else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def median_by_role(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each role's median over runs (CPU µs a code by process); a role a run lacks counts 0."""
    roles = {role for run in runs for role in run}
    return {role: median([run.get(role, 0.0) for run in runs]) for role in sorted(roles)}
