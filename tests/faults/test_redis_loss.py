"""Item 2: Redis loses the first-seen set mid-stream (FLUSHALL, redis-server killed and
restarted empty, the rebuilding consumer killed); the gate answers 503 while the set is
missing, the consumers pause and rebuild it from PostgreSQL, then carry on."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.redis_loss import redis_loss
from tests.faults.scale import Scale
from tests.faults.scenario import ScenarioReport, timed


@pytest.fixture(scope="module")
async def report(settings: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    return await timed(redis_loss(settings, workdir, scale))


def test_every_fault_was_injected(report: ScenarioReport, scale: Scale) -> None:
    assert len(report.faults) == scale.redis_flushes + scale.redis_restarts + 2, report.faults
    assert report.failures("rebuild_seen") == []


def test_gate_answers_503_while_the_set_is_missing(report: ScenarioReport) -> None:
    assert report.failures("gate_503_while_set_missing") == []
    assert report.failures("readyz_reports_redis") == []


def test_consumers_pause_while_the_set_is_missing(report: ScenarioReport) -> None:
    assert report.failures("consumers_pause") == []


def test_consumers_wait_quietly_while_the_set_is_missing(report: ScenarioReport) -> None:
    assert report.failures("consumers_wait_quietly") == []


def test_refused_attempt_claims_nothing(report: ScenarioReport) -> None:
    assert report.failures("refused_attempt_claims_nothing") == []
    assert report.record_failures("refused") == []


def test_no_missed_duplicate_after_the_rebuild(report: ScenarioReport) -> None:
    assert report.failures("no_missed_duplicate") == []
    assert report.record_failures("flags") == []


def test_consumers_carry_on(report: ScenarioReport) -> None:
    assert report.failures("consumers_progress") == []


def test_consumers_never_exit(report: ScenarioReport) -> None:
    assert report.failures("consumers_survive") == []


def test_record_equals_ground_truth(report: ScenarioReport) -> None:
    record = report.record
    assert record is not None
    assert record.payments_recorded == record.payments_expected > 0
    for aspect in ("settlements", "payments", "claims"):
        assert report.record_failures(aspect) == [], aspect


def test_rebuild_survives_its_rebuilder_being_killed(report: ScenarioReport) -> None:
    assert report.failures("rebuild_survives_a_crash") == []


def test_payment_counters_count_each_payment_once(report: ScenarioReport) -> None:
    assert report.record_failures("counters") == []
