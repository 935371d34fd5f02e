"""The consumer's offset discipline (as Quix Streams keeps it), without servers: finished work
is committed on a revoke, a commit the group refuses never ends the process, and a batch whose
partitions a rebalance took away is given up, not retried."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from consumers import runner


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


async def test_a_revoke_commits_finished_work_and_a_refused_commit_is_survived() -> None:
    consumer = _RefusingConsumer()
    offsets = runner._Offsets(consumer, _Silent())  # type: ignore[arg-type]
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
