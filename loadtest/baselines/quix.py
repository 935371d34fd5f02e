"""Baseline (c): a Quix Streams application doing first-seen detection with its own state
store (RocksDB), run as its own process (`python -m loadtest.baselines.quix`).

Settlements are re-keyed by trace code (group_by: a repartition topic), so each code's state
lives in one partition's store; a code already in the store is a duplicate and goes to the
output topic. Throughput: codes / (first code seen -> last code seen), startup excluded."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--codes", type=int, required=True, help="stop after this many")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_bytes(orjson.dumps(run(args.bootstrap, args.topic, args.codes)))
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


def run(bootstrap: str, topic: str, expected: int) -> dict[str, Any]:
    from quixstreams import Application, State

    _tolerate_missing_retention()
    app = Application(
        broker_address=bootstrap, consumer_group=f"quix-{topic}", auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"), use_changelog_topics=False,
    )
    seen = {"codes": 0, "duplicates": 0, "first": 0.0, "last": 0.0, "input_first": 0.0}

    def codes(value: dict[str, Any]) -> list[str]:
        seen["input_first"] = seen["input_first"] or time.time()
        return [code for line in value.get("lines", []) for code in line["trace_codes"]]

    def first_seen(code: str, state: State[Any, Any]) -> str | None:
        seen["first"] = seen["first"] or time.time()
        seen["codes"] += 1
        seen["last"] = time.time()
        duplicate = state.get(code) is not None
        if duplicate:
            seen["duplicates"] += 1
        else:
            state.set(code, 1)
        if seen["codes"] >= expected:
            app.stop()
        return code if duplicate else None

    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf = sdf.apply(codes, expand=True).group_by(lambda code: code, name="code")
    sdf = sdf.apply(first_seen, stateful=True).filter(lambda code: code is not None)
    sdf.to_topic(app.topic(f"{topic}.quix-flags"))
    app.run()
    span = max(seen["last"] - seen["input_first"], 1e-9)
    return {**seen, "seconds": round(span, 3), "codes_per_s": round(seen["codes"] / span),
            "measured": "first settlement consumed -> last code decided (startup excluded)"}


if __name__ == "__main__":
    raise SystemExit(main())
