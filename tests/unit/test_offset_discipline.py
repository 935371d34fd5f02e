"""The consumer's offset discipline (as Quix Streams keeps it), without servers: finished work
is committed on a revoke, a commit the group refuses never ends the process, and a batch whose
partitions a rebalance took away is given up, not retried; with a batch decided ahead while
the one before it finishes, offsets are committed in order and that batch is written only on
the one before's terms."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord

from consumers import runner
from service.kit.metrics import ConsumerMetrics
from service.settlements.stream import BatchReport


class _RefusingConsumer:
    """A consumer whose group refuses commits (a rebalance happened)."""

    def __init__(self) -> None:
        self.asked: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.asked.append(offsets)
        raise CommitFailedError("the group rebalanced")


class _Silent:
    async def now(self, partitions: list[int]) -> None:
        return None


async def _nothing_pending() -> None:
    """No finished batch still marking its flags."""


async def test_a_revoke_commits_finished_work_and_a_refused_commit_is_survived() -> None:
    consumer = _RefusingConsumer()
    offsets = runner._Offsets(consumer, _Silent(), _nothing_pending)  # type: ignore[arg-type]
    done = {TopicPartition("t", 0): 42}
    offsets.done.update(done)
    await offsets.on_partitions_revoked(list(done))
    assert consumer.asked == [done]
    assert offsets.done == {}  # not committed twice


async def test_a_failing_batch_whose_partitions_were_revoked_is_given_up(
    monkeypatch: Any,
) -> None:
    calls = 0

    async def failing(records: Any, ports: Any) -> Any:
        nonlocal calls
        calls += 1
        raise ConnectionError("PostgreSQL restarting")

    monkeypatch.setattr(runner, "process", failing)
    report = await runner.process_until_done(None, [], asyncio.Event(),  # type: ignore[arg-type]
                                             still_ours=lambda: False)
    assert report is None
    assert calls == 1  # dropped after the first failure, not retried for a new owner's work


# --- two batches in flight: one finishing, the next decided ahead on what it decided ---------

_PARTITION = TopicPartition("settlements", 0)


class _Group:
    """A consumer that holds partition 0 and accepts every commit."""

    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {_PARTITION}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(offsets)


class _Stream:
    """`prepare` and `finish` without servers: which were called, and with what."""

    def __init__(self) -> None:
        self.prepared: list[tuple[int, bool]] = []  # (first offset, decided ahead)
        self.finished: list[int] = []

    async def prepare(self, records: Any, ports: Any, after: Any = None) -> Any:
        self.prepared.append((records[0].offset, after is not None))
        return SimpleNamespace(first=records[0].offset, ahead=f"ahead-{records[0].offset}")

    async def finish(self, prepared: Any, ports: Any) -> BatchReport:
        self.finished.append(prepared.first)
        return BatchReport(1, [], [])


def _fetched(offset: int) -> runner.Fetched:
    return {_PARTITION: [ConsumerRecord("settlements", 0, offset, 0, 0, b"k", b"{}", None, 1, 2,
                                        [])]}


async def _finishing(report: BatchReport | None, offset: int) -> runner._Finishing:
    async def done() -> BatchReport | None:
        return report

    return runner._Finishing(asyncio.create_task(done()), _fetched(offset), 0.0,
                             f"ahead-{offset}")  # type: ignore[arg-type]


async def _next(monkeypatch: Any, report: BatchReport | None) -> tuple[
        _Stream, _Group, runner._Finishing | None]:
    fake, group = _Stream(), _Group()
    monkeypatch.setattr(runner, "prepare", fake.prepare)
    monkeypatch.setattr(runner, "finish", fake.finish)
    offsets = runner._Offsets(group, _Silent(), _nothing_pending)  # type: ignore[arg-type]
    before = await _finishing(report, 10)
    consumer: Any = group
    ports: Any = None  # the fakes take none
    started = await runner._next(before, _fetched(11), consumer, offsets, ports,
                                 ConsumerMetrics(), asyncio.Event())
    if started is not None:
        await started.task
    return fake, group, started


async def test_the_next_batch_decided_ahead_is_written_once_the_one_before_is_committed(
    monkeypatch: Any,
) -> None:
    fake, group, started = await _next(monkeypatch, BatchReport(1, [], []))
    assert fake.prepared == [(11, True)]  # decided once, ahead
    assert group.committed == [{_PARTITION: 11}]  # the batch before's, before this one's
    assert fake.finished == [11]
    assert started is not None


async def test_a_batch_decided_ahead_of_one_that_did_not_go_as_decided_is_decided_again(
    monkeypatch: Any,
) -> None:
    fake, group, _ = await _next(monkeypatch, BatchReport(1, [], [], as_decided=False))
    assert fake.prepared == [(11, True), (11, False)]
    assert fake.finished == [11]


async def test_a_batch_decided_ahead_of_one_given_up_is_dropped_with_it(
    monkeypatch: Any,
) -> None:
    fake, group, started = await _next(monkeypatch, None)
    assert started is None
    assert group.committed == []  # the batch before's offsets stay, so this one's do too
    assert fake.finished == []


# --- checkpoints: finished work is stored after every batch, committed now and then ---------


async def test_finished_offsets_are_committed_at_checkpoints_not_after_every_batch() -> None:
    group = _Group()
    offsets = runner._Offsets(group, _Silent(), _nothing_pending, interval_s=3600.0)  # type: ignore[arg-type]
    offsets.store({_PARTITION: 11})
    await offsets.checkpoint()
    assert group.committed == [{_PARTITION: 11}]  # nothing committed before: due at once
    for offset in (12, 13):
        offsets.store({_PARTITION: offset})
        await offsets.checkpoint()
    assert group.committed == [{_PARTITION: 11}]  # within the interval: stored, not sent
    await offsets.on_partitions_revoked([_PARTITION])  # a rebalance is a checkpoint
    assert group.committed == [{_PARTITION: 11}, {_PARTITION: 13}]


async def test_a_poll_that_finds_nothing_commits_what_is_stored() -> None:
    """A consumer that has caught up commits at once, so the group's lag reads zero and a
    restart redelivers nothing, whatever the interval."""
    stop = asyncio.Event()

    class Idle(_Group):
        polls = 0

        async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
            self.polls += 1
            if self.polls == 3:
                stop.set()
            return {}

    group = Idle()
    offsets = runner._Offsets(group, _Silent(), _nothing_pending, interval_s=3600.0)  # type: ignore[arg-type]
    offsets.store({_PARTITION: 11})
    await offsets.checkpoint()
    offsets.store({_PARTITION: 12})
    ports: Any = SimpleNamespace(settings=SimpleNamespace(
        consumer_heartbeat_file=None, consumer_fetch_max_wait_ms=1, consumer_max_batch=10))
    await runner._loop(group, offsets, ports, ConsumerMetrics(), stop)
    assert group.committed == [{_PARTITION: 11}, {_PARTITION: 12}]


async def test_offsets_wait_for_what_finished_batches_still_do_and_stay_if_it_fails() -> None:
    """A finished batch's flags are marked published while the next batch runs: its offsets
    are committed only once that is done, so a crash before it redelivers the batch."""
    outcomes: list[Exception | None] = [ConnectionError("PostgreSQL restarting"), None]

    async def marks() -> None:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure

    group = _Group()
    offsets = runner._Offsets(group, _Silent(), finished=marks)  # type: ignore[arg-type]
    offsets.store({_PARTITION: 11})
    await offsets.checkpoint()
    assert group.committed == []  # the marks failed: the offsets stay
    await offsets.checkpoint()
    assert group.committed == [{_PARTITION: 11}]
