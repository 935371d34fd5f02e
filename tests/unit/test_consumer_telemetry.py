"""What a consumer's metrics count per batch, and the reason classes of its dead letters: each
class pinned to the event that produces it through the real decoder, so a reworded error shows
here, not as "other" in production."""

from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.telemetry import observe_batch, reason_class
from service.flags.schemas import FlagRecord
from service.kit.metrics import ConsumerMetrics
from service.settlements.events import DeadLetter, Incoming, decode
from service.settlements.stream import BatchReport
from tests import factories as f


def _record(value: bytes) -> Incoming:
    return Incoming("t", 0, 7, int(time.time() * 1000), b"k", value)


def _decoded_error(value: bytes) -> str:
    event = decode(_record(value))
    assert isinstance(event, DeadLetter), event
    return event.error


_SETTLEMENT = f.settlement("P11010500001", [f.line(1, [f.cn20()])])


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'{"type": "settlement", "x": "\\u0000"}', "nul_character"),
    (b'{"type": "refund"}', "unknown_type"),
    (orjson.dumps({"type": "settlement", **_SETTLEMENT, "lines": "two"}), "invalid_field"),
    (orjson.dumps({"type": "settlement", "source": "gate", **_SETTLEMENT}),
     "incomplete_gate_event"),
])
def test_decoder_errors_have_their_class(value: bytes, reason: str) -> None:
    assert reason_class(_decoded_error(value)) == reason


@pytest.mark.parametrize(("error", "reason"), [
    ("unknown institution P11010500001", "unknown_institution"),
    ("reversal R-1 names unknown settlement S-1", "unknown_settlement"),
    ("settlement S-1 has no line [3]", "unknown_line"),
    ("something nobody foresaw", "other"),
])
def test_batch_errors_have_their_class(error: str, reason: str) -> None:
    assert reason_class(error) == reason


def _values(metrics: ConsumerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples}


def _flag(kind: str) -> FlagRecord:
    at = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
    return FlagRecord("fl_1", kind, "high", None, "P11010500001", "S-1", 1, at, at, None, None)


def test_a_batch_counts_codes_flags_and_dead_letters() -> None:
    metrics = ConsumerMetrics()
    dead = decode(_record(b"{bad"))
    assert isinstance(dead, DeadLetter)
    flags = [_flag("duplicate_payment"), _flag("duplicate_payment"), _flag("missing_code")]
    observe_batch(metrics, 0.25, BatchReport(2, flags, [dead]))
    values = _values(metrics)
    assert values[("tracegate_codes_processed_total", ())] == 2
    assert values[("tracegate_flags_total", (("kind", "duplicate_payment"),))] == 2
    assert values[("tracegate_flags_total", (("kind", "missing_code"),))] == 1
    assert values[("tracegate_dlq_total", (("reason", "not_json"),))] == 1
    assert values[("tracegate_consumer_batch_seconds_count", ())] == 1
    assert values[("tracegate_consumer_batch_seconds_sum", ())] == 0.25


def test_lag_of_partitions_no_longer_assigned_is_dropped() -> None:
    metrics = ConsumerMetrics()
    metrics.lags({0: 5, 1: 0})
    metrics.lags({1: 3, 2: 9})  # a rebalance took partition 0 away
    lag = {labels: value for (name, labels), value in _values(metrics).items()
           if name == "tracegate_consumer_lag"}
    assert lag == {(("partition", "1"),): 3, (("partition", "2"),): 9}
