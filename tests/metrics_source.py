"""A process's Prometheus metrics as issue 17's item 4 names them, made with prometheus_client
and served over real HTTP: what the console's sampler reads from each consumer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class MetricsSource:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.codes = Counter("tracegate_codes_processed", "codes", registry=r)
        self.flags = Counter("tracegate_flags", "flags", ["kind"], registry=r)
        self.gate = Histogram("tracegate_gate_request_seconds", "gate", ["route", "decision"],
                              buckets=(0.005, 0.01, 0.05, 0.1, 1.0), registry=r)
        self.lag = Gauge("tracegate_consumer_lag", "lag", ["partition"], registry=r)
        self.dlq = Counter("tracegate_dlq", "dlq", ["reason"], registry=r)
        self.hot_set = Gauge("tracegate_hot_set_codes", "hot set", registry=r)

    def work(self, codes: int = 100) -> None:
        """A step of a busy process: codes, flags, gate calls, lag, one dead letter."""
        self.codes.inc(codes)
        self.flags.labels("duplicate_payment").inc(2)
        self.flags.labels("missing_code").inc(1)
        for seconds in (0.004, 0.008, 0.02, 0.07):
            self.gate.labels("/v1/settlements", "pay").observe(seconds)
        for partition in range(3):
            self.lag.labels(str(partition)).set(10 * (partition + 1))
        self.dlq.labels("malformed").inc()
        self.hot_set.set(1000)

    @contextmanager
    def served(self) -> Iterator[str]:
        """Its metrics URL on a free loopback port, for as long as the context lasts."""
        server, thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        try:
            yield f"http://127.0.0.1:{server.server_port}/metrics"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
