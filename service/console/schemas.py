from __future__ import annotations

from pydantic import BaseModel


class SourceStatus(BaseModel):
    source: str  # "api" (this process's own metrics) or a metrics URL
    up: bool
    error: str | None
    scraped_at: float | None  # unix seconds


class Series(BaseModel):
    """The last hour of the charts, column-wise: `t` (unix seconds) is the time axis of every
    list; null where a point has no value. Rates are per second between two samples."""

    interval_s: float
    window_s: float
    t: list[float]
    codes_per_s: list[float | None]
    flags_per_s: dict[str, list[float | None]]  # by kind
    gate_p50_ms: list[float | None]
    gate_p99_ms: list[float | None]
    consumer_lag: dict[str, list[float | None]]  # by partition
    dlq_total: list[float | None]
    hot_set_codes: list[float | None]
    sources: list[SourceStatus]


class Me(BaseModel):
    """Who an API key is (never the key)."""

    key_id: int
    role: str
    institution_id: str | None
