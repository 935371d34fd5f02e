"""FlagMarks without servers: a batch's flags are marked in the background, the next wait
sees the marks made, and a mark that failed is made again before a later wait succeeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from service.records import repository
from service.settlements.stream import FlagMarks


async def test_a_failed_mark_raises_at_the_wait_and_is_made_again(monkeypatch: Any) -> None:
    calls: list[list[str]] = []

    async def mark_published(pool: Any, flag_ids: Sequence[str]) -> None:
        calls.append(list(flag_ids))
        if len(calls) == 1:
            raise ConnectionError("PostgreSQL restarting")

    monkeypatch.setattr(repository, "mark_published", mark_published)
    marks = FlagMarks()
    flag: Any = type("Flag", (), {"flag_id": "f-1"})()
    marks.start(None, [flag])
    with pytest.raises(ConnectionError):
        await marks.done()
    await marks.done()  # the mark made again meanwhile
    assert calls == [["f-1"], ["f-1"]]
    await marks.done()  # nothing pending: no third mark
    assert len(calls) == 2
