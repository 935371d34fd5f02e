"""Baseline (c): a Quix Streams application doing first-seen detection with its own state
store (RocksDB), run as its own process (`python -m loadtest.baselines.quix`); with
`--changelog`, the store is backed by its changelog topic, as a production Quix app runs
(the state survives the loss of its disk), row `quixstreams_changelog`.

Settlements are re-keyed by trace code (group_by: a repartition topic), so each code's state
lives in one partition's store; a code already in the store is a duplicate and goes to the
output topic as {settlement_id, line_no, trace_code}. Processing is at-least-once (exactly-once
needs Kafka transactions, which Tansu lacks): a redelivered settlement's codes are flagged
again, as the workload's redeliveries show. Quix's own producer stays idempotent (its default,
enable.idempotence): Tansu 0.6.0 answers InitProducerId, and the runs complete with it.

Throughput: codes / (first settlement consumed -> the final checkpoint committed: offsets,
output and changelog flushed), startup excluded; also to the last code decided. CPU: this
process's own (every thread: librdkafka, RocksDB) and the broker's (`--broker-pid`), read at
those two instants."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from cli.devstack.process import cpu_seconds
from loadtest.cpu import per_unit_us


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--codes", type=int, required=True, help="stop after this many")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--changelog", action="store_true", help="state backed by a topic")
    parser.add_argument("--broker-pid", type=int, default=0, help="its CPU is read too")
    args = parser.parse_args()
    result = run(args.bootstrap, args.topic, args.codes, args.changelog, args.broker_pid)
    args.out.write_bytes(orjson.dumps(result))
    return 0


def _tolerate_missing_retention() -> None:
    """Tansu's DescribeConfigs omits retention.ms, which Quix Streams requires to derive the
    repartition topic's config (KeyError): fill in Kafka's default of 7 days."""
    from quixstreams.models.topics.manager import TopicManager

    original = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive(cls: Any, topics: Any) -> Any:
        for topic in topics:
            topic.broker_config.extra_config.setdefault("retention.ms", "604800000")
        return original(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive)  # type: ignore[method-assign,assignment]


class _Clock:
    """The run's instants and the CPU spent between the first and the durable one."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.times = {"input_first": 0.0, "first": 0.0, "last": 0.0, "durable": 0.0}
        self.cpu: dict[str, float] = {}  # minus the CPU at the start, by role
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        if not self.times["input_first"]:
            self.times["input_first"] = time.time()
            self.cpu = {"quix": -time.process_time(), "kafka": -self._broker()}

    def durable(self) -> None:
        """After each forced checkpoint: the last one is the run's end."""
        if self.times["last"]:
            self.times["durable"] = time.time()
            self.spent = {"quix": self.cpu["quix"] + time.process_time(),
                          "kafka": self.cpu["kafka"] + self._broker()}

    def _broker(self) -> float:
        return cpu_seconds(self.broker_pid) if self.broker_pid else 0.0


def _note_checkpoints(clock: _Clock) -> None:
    """The end of the run is the final checkpoint's commit (Application.run's last act)."""
    from quixstreams.processing.context import ProcessingContext

    original = ProcessingContext.commit_checkpoint

    def commit(self: Any, force: bool = False, revoking: bool = False) -> None:
        original(self, force=force, revoking=revoking)
        if force:
            clock.durable()

    ProcessingContext.commit_checkpoint = commit  # type: ignore[method-assign]


def run(bootstrap: str, topic: str, expected: int, changelog: bool = False,
        broker_pid: int = 0) -> dict[str, Any]:
    from quixstreams import Application, State

    _tolerate_missing_retention()
    clock = _Clock(broker_pid)
    _note_checkpoints(clock)
    app = Application(
        broker_address=bootstrap, consumer_group=f"quix-{topic}", auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"), use_changelog_topics=changelog,
        processing_guarantee="at-least-once",
        # As tracegate's consumers (consumer_session_timeout_ms): on Tansu the group's first
        # join took 25 s with librdkafka's 45 s default and 5 s with this; startup is outside
        # the measured window either way.
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    seen = {"codes": 0, "duplicates": 0}

    def sold(value: dict[str, Any]) -> list[dict[str, Any]]:
        clock.start()
        return [{"settlement_id": value["settlement_id"], "line_no": line["line_no"],
                 "trace_code": code}
                for line in value.get("lines", []) for code in line["trace_codes"]]

    def first_seen(sale: dict[str, Any], state: State[Any, Any]) -> dict[str, Any] | None:
        clock.times["first"] = clock.times["first"] or time.time()
        seen["codes"] += 1
        clock.times["last"] = time.time()
        duplicate = state.get("paid") is not None
        if duplicate:
            seen["duplicates"] += 1
        else:
            state.set("paid", 1)
        if seen["codes"] >= expected:
            app.stop()
        return sale if duplicate else None

    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf = sdf.apply(sold, expand=True).group_by(lambda sale: sale["trace_code"], name="code")
    sdf = sdf.apply(first_seen, stateful=True).filter(lambda sale: sale is not None)
    sdf.to_topic(app.topic(flags_topic(topic), value_serializer="json"))
    app.run()
    return _result(seen, clock, changelog)


def flags_topic(topic: str) -> str:
    return f"{topic}.quix-flags"


def _result(seen: dict[str, int], clock: _Clock, changelog: bool) -> dict[str, Any]:
    times = clock.times
    span = max(times["durable"] - times["input_first"], 1e-9)
    decided = max(times["last"] - times["input_first"], 1e-9)
    return {**seen, **times, "seconds": round(span, 3), "codes_per_s": round(seen["codes"] / span),
            "codes_per_s_decided": round(seen["codes"] / decided), "changelog": changelog,
            "processing_guarantee": "at-least-once",
            "cpu_us_per_code": per_unit_us(clock.spent, seen["codes"]),
            "measured": "first settlement consumed -> final checkpoint committed (offsets, "
                        "flags and changelog flushed); startup excluded"}


if __name__ == "__main__":
    raise SystemExit(main())
