"""Item 3: the broker suspended, PostgreSQL restarted mid-batch, Redis suspended, on a stack of
the test's own; the gate refuses rather than guesses, /readyz says what is down while it is,
the consumer resumes and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.faults.outages import outages
from tests.faults.scale import Scale
from tests.faults.scenario import ScenarioReport, timed


@pytest.fixture(scope="module")
async def report(settings: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    return await timed(outages(settings, workdir, scale))


def test_every_outage_was_injected(report: ScenarioReport) -> None:
    assert len(report.faults) == 3, report.faults
    assert "while the consumer wrote a batch" in report.faults[1]


def test_gate_answers_503_and_releases_its_claim(report: ScenarioReport) -> None:
    assert report.failures("gate_503_when_broker_down") == []
    assert report.failures("gate_503_when_postgres_down") == []
    assert report.failures("gate_releases_its_claim") == []


def test_settlement_refused_with_503_never_reaches_the_record(report: ScenarioReport) -> None:
    assert report.failures("refused_never_recorded") == []
    assert report.record_failures("refused") == []


@pytest.mark.parametrize("component", ["kafka", "postgres", "redis"])
def test_readyz_reports_each_outage_while_it_lasts(report: ScenarioReport, component: str) -> None:
    assert report.failures(f"readyz_reports_{component}") == []
    assert report.failures("readyz_recovers") == []


def test_postgres_restart_mid_batch_retries_the_batch(report: ScenarioReport) -> None:
    assert report.failures("batch_retried") == []


def test_consumer_resumes_after_each_outage(report: ScenarioReport) -> None:
    assert report.failures("consumers_survive") == []
    assert report.failures("consumers_progress") == []


def test_nothing_lost_or_doubled(report: ScenarioReport) -> None:
    record = report.record
    assert record is not None
    assert record.payments_recorded == record.payments_expected > 0
    assert record.flags_recorded == record.flags_expected > 0
    for aspect in ("settlements", "payments", "flags"):
        assert report.record_failures(aspect) == [], aspect


def test_every_first_payment_keeps_its_claim(report: ScenarioReport) -> None:
    assert report.record_failures("claims") == []


def test_payment_counters_count_each_payment_once(report: ScenarioReport) -> None:
    assert report.record_failures("counters") == []
