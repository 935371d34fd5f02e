"""Prometheus metrics, as small objects built at start-up and passed in (never module globals,
so tests can run several apps and consumers in one interpreter).

`GateMetrics` belongs to an API process. `tracegate api` runs several uvicorn workers, so it
runs them in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set and cleaned
before any worker starts: metrics_directory.py): each worker writes its values to files there
and any worker's /metrics renders the sum of all of them, so one scrape covers every worker.
`ConsumerMetrics` belongs to one `tracegate consume` process, which serves them on a port of
its own (consumers/telemetry.py). Hot paths pay little: the gate observes one histogram per
call, a consumer counts once per batch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from service.kit.metrics_directory import MULTIPROC_ENV

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_GATE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_mode() -> bool:
    return MULTIPROC_ENV in os.environ


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Every API worker and consumer measures the same database (service/records/
        # partitions.py, hourly): across workers the latest reading is the truth. "mostrecent"
        # shows it, and nothing before the first reading; "max" would keep a replaced
        # worker's stale figure. A value set periodically, not a set_function gauge: those are
        # not aggregated in multiprocess mode.
        self._partition_months = Gauge(
            "tracegate_partition_months_ahead",
            "Whole months after the current one that have a code_events partition",
            multiprocess_mode="mostrecent", registry=self.registry)

    def partition_months_ahead(self, months: int) -> None:
        self._partition_months.set(months)

    def render(self) -> bytes:
        """Prometheus text: this process's registry, or in multiprocess mode every process's
        values (collected afresh on each scrape, as the library prescribes)."""
        if not multiprocess_mode():
            return generate_latest(self.registry)
        collected = CollectorRegistry()
        MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        return generate_latest(collected)


class GateMetrics(_Metrics):
    """Of an API process: the gate's latency by route and decision, NHSA messages answered."""

    def __init__(self) -> None:
        super().__init__()
        self._request_seconds = Histogram(
            "tracegate_gate_request_seconds",
            "Gate calls answered, by route and decision; latency includes Kafka's ack",
            ["route", "decision"], buckets=_GATE_BUCKETS, registry=self.registry,
        )
        self._request_children: dict[tuple[str, str], Histogram] = {}

        self._nhsa_messages = Counter(
            "tracegate_nhsa_messages", "NHSA messages (POST /v1/nhsa) answered, by infno and "
            "infcode (-1: not taken)", ["infno", "infcode"], registry=self.registry,
        )

    def gate_request(self, route: str, decision: str, seconds: float) -> None:
        # Each (route, decision) child looked up once: `labels()` takes a lock and builds its
        # key on every call (timed: 3.2 us a call with it, 0.9 without in one process, 2.1
        # in the API's multiprocess mode, whose values are writes to shared files).
        child = self._request_children.get((route, decision))
        if child is None:
            child = self._request_children[(route, decision)] = self._request_seconds.labels(
                route, decision)
        child.observe(seconds)

    def nhsa_message(self, infno: str, infcode: int) -> None:
        """`infno` one this service takes, or "unknown" (never the message's own text)."""
        self._nhsa_messages.labels(infno, str(infcode)).inc()


class ConsumerMetrics(_Metrics):
    """Of one consumer process: what its batches did, its lag, the first-seen set's size."""

    def __init__(self) -> None:
        super().__init__()
        registry = self.registry
        self._codes = Counter("tracegate_codes_processed", "Trace codes in settlements consumed",
                              registry=registry)
        self._flags = Counter("tracegate_flags", "Flags recorded and published, by kind",
                              ["kind"], registry=registry)
        self._batch_seconds = Histogram(
            "tracegate_consumer_batch_seconds",
            "One batch: decode, decide, record, publish (offsets committed after)",
            buckets=_BATCH_BUCKETS, registry=registry)
        self._dlq = Counter("tracegate_dlq", "Events dead-lettered, by reason class",
                            ["reason"], registry=registry)
        self._lag = Gauge("tracegate_consumer_lag",
                          "Records behind the partition's high-water mark, per assigned partition",
                          ["partition"], registry=registry)
        self._hot_set = Gauge("tracegate_hot_set_codes",
                              "Codes in the Redis first-seen set (sampled periodically)",
                              registry=registry)
        self._lagging: set[str] = set()

    def batch_done(self, seconds: float, codes: int, flag_kinds: Iterable[str]) -> None:
        self._batch_seconds.observe(seconds)
        self._codes.inc(codes)
        for kind in flag_kinds:
            self._flags.labels(kind).inc()

    def dead_lettered(self, reason: str) -> None:
        """`reason` is a class (a short fixed word), never an event's own error text."""
        self._dlq.labels(reason).inc()

    def lag(self, partition: int, records: int) -> None:
        self._lag.labels(str(partition)).set(records)

    def lags(self, by_partition: Mapping[int, int]) -> None:
        """The lag of every partition assigned now; one assigned no longer is dropped, so a
        rebalance leaves no stale series behind."""
        for partition, records in by_partition.items():
            self.lag(partition, records)
        current = {str(partition) for partition in by_partition}
        for gone in self._lagging - current:
            self._lag.remove(gone)
        self._lagging = current

    def hot_set_codes(self, codes: int) -> None:
        self._hot_set.set(codes)
