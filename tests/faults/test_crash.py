"""Item 1: the consumer process killed with SIGKILL at random moments of a stream with known
ground truth, restarted each time; the record equals the truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.crash import crash
from tests.faults.scale import Scale
from tests.faults.scenario import ScenarioReport, timed


@pytest.fixture(scope="module")
async def report(settings: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    return await timed(crash(settings, workdir, scale))


def test_every_kill_lands_mid_stream(report: ScenarioReport, scale: Scale) -> None:
    assert len(report.faults) == scale.crash_kills, report.faults
    assert any("while it wrote a batch" in fault for fault in report.faults), report.faults


def test_consumer_never_dies_or_stalls(report: ScenarioReport) -> None:
    assert report.failures("consumers_survive") == []
    assert report.failures("consumers_progress") == []


def test_every_payment_recorded_once(report: ScenarioReport) -> None:
    record = report.record
    assert record is not None
    assert record.settlements_recorded == record.settlements_expected > 0
    assert record.payments_recorded == record.payments_expected > 0
    assert report.record_failures("settlements") == []
    assert report.record_failures("payments") == []


def test_every_flag_once_and_no_false_flag(report: ScenarioReport) -> None:
    record = report.record
    assert record is not None
    assert record.flags_recorded == record.flags_expected > 0
    assert report.record_failures("flags") == []


def test_every_first_payment_keeps_its_claim(report: ScenarioReport) -> None:
    assert report.record_failures("claims") == []


def test_payment_counters_count_each_payment_once(report: ScenarioReport) -> None:
    assert report.record_failures("counters") == []
