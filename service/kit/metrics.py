"""Prometheus metrics of one API process, in a registry of its own (built at start-up, not a
module global, so tests can run several apps in one interpreter). Flags are raised by the
consumers, which expose no metrics: operations watch the flags topic (GET /v1/flags/stream)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.decisions = Counter(
            "tracegate_gate_decisions", "Gate decisions by outcome", ["decision"],
            registry=self.registry,
        )
        self.gate_seconds = Histogram(
            "tracegate_gate_seconds", "Gate latency, Kafka ack included",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.nhsa_messages = Counter(
            "tracegate_nhsa_messages", "NHSA messages (POST /v1/nhsa) by infcode", ["infcode"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
