"""Issue 15 item 3: killed at every point of a batch (see tests/faults/crash_points.py), a
consumer leaves nothing a fresh one cannot finish exactly: every flag, every code's history,
every claim and the first-seen set as the workload's ground truth says; and so when the
stream is many small batches, each decided ahead while the one before is written, killed at
each point of the third batch to reach it. The points run at once, each on topics, a group
and institutions of its own."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.crash_points import CrashOutcome, crash_at
from tests.faults.crashing_consumer import AHEAD, POINTS

SETTLEMENTS = 120
# Small batches: the chains span several, each decided on what the one before decided while
# that one is written; the kill comes at the third batch to reach its point.
SMALL_BATCH = 4
KILLED_AT = 3


@pytest.fixture(scope="module")
async def outcomes(settings: Settings, workdir: Path) -> dict[str, CrashOutcome]:
    done = await asyncio.gather(*(crash_at(point, settings, workdir, SETTLEMENTS)
                                  for point in POINTS))
    return {outcome.point: outcome for outcome in done}


@pytest.fixture(scope="module")
async def outcomes_decided_ahead(settings: Settings, workdir: Path) -> dict[str, CrashOutcome]:
    done = await asyncio.gather(*(
        crash_at(point, settings, workdir, SETTLEMENTS, SMALL_BATCH, KILLED_AT)
        for point in (*POINTS, AHEAD)))
    return {outcome.point: outcome for outcome in done}


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_point_of_a_batch_changes_nothing_of_the_outcome(
    point: str, outcomes: dict[str, CrashOutcome],
) -> None:
    _exact(outcomes[point])


@pytest.mark.parametrize("point", [*POINTS, AHEAD])
def test_a_kill_while_the_next_batch_is_decided_ahead_changes_nothing_of_the_outcome(
    point: str, outcomes_decided_ahead: dict[str, CrashOutcome],
) -> None:
    _exact(outcomes_decided_ahead[point])


def _exact(outcome: CrashOutcome) -> None:
    assert outcome.exit_code == -signal.SIGKILL, f"the consumer was not killed at {outcome.point}"
    assert outcome.figures["flags"] > 0
    assert outcome.figures["history_events"] > SETTLEMENTS
    assert outcome.problems == []
