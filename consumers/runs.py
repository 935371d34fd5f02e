"""How a batch of the settlements topic is cut into runs that are decided together: a
reversal ends a run, so a pack reversed and sold again within one batch is seen in the order
it happened; a long run is cut into slices, each recorded while the next is decided."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from consumers.events import Event, ReversalEventIn, SettlementEvent


def in_waves(events: list[Event]) -> list[Event]:
    """The batch reordered so that reversals split it into as few runs as Kafka's order
    allows. Kafka orders events only within a partition (and consumers in a group take
    partitions in any interleaving), so each partition keeps its order and the rest is free:
    every partition's events before its first reversal, those reversals, the events before
    each partition's second reversal, and so on."""
    reversals_seen: Counter[tuple[str, int]] = Counter()

    def wave(event: Event) -> tuple[int, int]:
        partition = (event.record.topic, event.record.partition)
        if isinstance(event, ReversalEventIn):
            reversals_seen[partition] += 1
            return reversals_seen[partition] - 1, 1
        return reversals_seen[partition], 0

    keyed = [(wave(event), event) for event in events]
    keyed.sort(key=lambda pair: pair[0])  # stable: within a wave, the batch's order
    return [event for _, event in keyed]


def runs(events: list[Event], size: int) -> Iterator[list[SettlementEvent] | ReversalEventIn]:
    """The batch in order: slices of at most `size` consecutive settlements, and reversals
    (dead letters are skipped: they are published, not recorded)."""
    run: list[SettlementEvent] = []
    for event in events:
        if isinstance(event, SettlementEvent):
            run.append(event)
            if len(run) == size:
                yield run
                run = []
        elif isinstance(event, ReversalEventIn):
            if run:
                yield run
                run = []
            yield event
    if run:
        yield run
