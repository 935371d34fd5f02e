"""How a consumer cuts a batch into runs: Kafka's order kept within each partition, reversals
splitting the batch as few times as that order allows, long runs sliced."""

from __future__ import annotations

from collections.abc import Sequence

from consumers.events import Event, ReversalEventIn, SettlementEvent, decode
from consumers.runs import in_waves, runs
from tests import factories as f

_INSTITUTION = f.institution_id()


def _sale(partition: int, name: str) -> Event:
    body = f.settlement(_INSTITUTION, [f.line(1, [f.cn20()])], sid=name)
    return decode(f.stream_record("settlements", body, partition))


def _reversal(partition: int, name: str) -> Event:
    body = f.stream_reversal({"settlement_id": name})
    return decode(f.stream_record("settlements", body, partition))


def _names(items: Sequence[Event]) -> list[str]:
    return [_name(event) for event in items]


def _name(event: Event) -> str:
    if isinstance(event, SettlementEvent):
        return event.settlement.settlement_id
    assert isinstance(event, ReversalEventIn)
    return event.reversal.reversal_id


def test_each_partition_keeps_its_order_and_reversals_come_in_waves() -> None:
    batch = [_sale(0, "a1"), _reversal(0, "a1"), _sale(0, "a2"), _reversal(0, "a2"),
             _sale(0, "a3"), _sale(1, "b1"), _sale(1, "b2"), _reversal(1, "b1"),
             _sale(1, "b3"), _sale(2, "c1")]
    assert _names(in_waves(batch)) == [
        "a1", "b1", "b2", "c1",  # every partition up to its first reversal
        "R-a1", "R-b1",
        "a2", "b3",
        "R-a2",
        "a3",
    ]


def test_the_same_partition_number_on_another_topic_is_another_partition() -> None:
    other = decode(f.stream_record("other", f.settlement(_INSTITUTION, [f.line(1, [f.cn20()])],
                                                          sid="o1"), 0))
    assert _names(in_waves([_reversal(0, "a0"), other])) == ["o1", "R-a0"]


def test_runs_are_sliced_and_end_at_each_reversal() -> None:
    batch = [_sale(0, "s1"), _sale(0, "s2"), _sale(0, "s3"), _reversal(0, "s1"),
             _sale(0, "s4")]
    cut = [_names(item) if isinstance(item, list) else _name(item)
           for item in runs(batch, 2)]
    assert cut == [["s1", "s2"], ["s3"], "R-s1", ["s4"]]
