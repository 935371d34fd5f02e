"""Issue 15 item 3: killed at every point of a batch (see tests/faults/crash_points.py), a
consumer leaves nothing a fresh one cannot finish exactly: every flag, every code's history,
every claim and the first-seen set as the workload's ground truth says. The six points run at
once, each on topics, a group and institutions of its own."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.crash_points import CrashOutcome, crash_at
from tests.faults.crashing_consumer import POINTS

SETTLEMENTS = 120


@pytest.fixture(scope="module")
async def outcomes(settings: Settings, workdir: Path) -> dict[str, CrashOutcome]:
    done = await asyncio.gather(*(crash_at(point, settings, workdir, SETTLEMENTS)
                                  for point in POINTS))
    return {outcome.point: outcome for outcome in done}


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_point_of_a_batch_changes_nothing_of_the_outcome(
    point: str, outcomes: dict[str, CrashOutcome],
) -> None:
    outcome = outcomes[point]
    assert outcome.exit_code == -signal.SIGKILL, f"the consumer was not killed at {point}"
    assert outcome.figures["flags"] > 0
    assert outcome.figures["history_events"] > SETTLEMENTS
    assert outcome.problems == []
