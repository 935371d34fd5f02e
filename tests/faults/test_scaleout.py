"""Issue 19 item 4: two consumers on six partitions, one killed, one added mid-stream, a Redis
node's data lost; on a Redis Cluster when the suite runs on one (TRACEGATE_TEST_REDIS_CLUSTER)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.scale import Scale
from tests.faults.scaleout import scale_out
from tests.faults.scenario import ScenarioReport, timed


@pytest.fixture(scope="module")
async def report(settings: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    return await timed(scale_out(settings, workdir, scale))


def test_every_fault_was_injected(report: ScenarioReport) -> None:
    assert len(report.faults) == 3, report.faults
    assert "SIGKILL consumer-2" in report.faults[0]
    assert "consumer-3 joined" in report.faults[1]
    assert "FLUSHALL of the Redis primary" in report.faults[2]


def test_consumers_never_die_or_stall(report: ScenarioReport) -> None:
    assert report.failures("consumer_joins") == []
    assert report.failures("consumers_survive") == []
    assert report.failures("consumers_progress") == []


def test_gate_refuses_codes_of_the_lost_node_and_keeps_no_claim(report: ScenarioReport) -> None:
    assert report.failures("gate_503_while_node_lost") == []
    assert report.failures("refused_attempt_claims_nothing") == []
    assert report.record_failures("refused") == []


def test_no_missed_duplicate_after_the_rebuild(report: ScenarioReport) -> None:
    assert report.failures("no_missed_duplicate") == []


def test_record_equals_ground_truth(report: ScenarioReport) -> None:
    record = report.record
    assert record is not None
    assert record.settlements_recorded == record.settlements_expected > 0
    assert record.payments_recorded == record.payments_expected > 0
    assert record.flags_recorded == record.flags_expected > 0
    for aspect in ("settlements", "payments", "flags", "claims", "counters"):
        assert report.record_failures(aspect) == [], aspect
