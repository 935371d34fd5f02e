"""The console's series: Prometheus text into rates, quantiles and gauges per tick, summed over
processes, a restarted process's counters read as new work, a process down shown as down."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from service.console.sampler import Sampler, Source
from service.console.series import SeriesBuffer, increase, quantile, read_text
from tests.metrics_source import MetricsSource


def _scrape(source: MetricsSource) -> Callable[[], object]:
    async def scrape() -> str:
        return generate_latest(source.registry).decode()

    return scrape


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_reading_takes_the_chart_figures_from_prometheus_text() -> None:
    source = MetricsSource()
    source.work(codes=250)
    reading = read_text(generate_latest(source.registry).decode(), at=0.0)
    assert reading.codes == 250
    assert reading.flags == {"duplicate_payment": 2, "missing_code": 1}
    assert reading.gate_buckets[float("inf")] == 4
    assert reading.gate_buckets[0.01] == 2
    assert reading.lag == {"0": 10, "1": 20, "2": 30}
    assert (reading.dlq, reading.hot_set) == (1, 1000)


def test_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    buckets = {0.01: 0.0, 0.1: 10.0, float("inf"): 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.055)
    assert quantile(0.99, {0.1: 5.0, float("inf"): 10.0}) == 0.1  # in +Inf: the top bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None  # nothing observed


def test_a_counter_that_drops_was_restarted() -> None:
    assert increase(130, 100) == 30
    assert increase(20, 100) == 20


async def test_ticks_sum_processes_rates_and_show_a_source_down() -> None:
    one, two, clock = MetricsSource(), MetricsSource(), Clock()
    failing = True

    async def flaky() -> str:
        if failing:
            raise ConnectionError("refused")
        return generate_latest(two.registry).decode()

    sampler = Sampler([Source("one", _scrape(one)), Source("two", flaky)],  # type: ignore[arg-type]
                      SeriesBuffer(2.0), clock)
    await sampler.sample()  # no rate yet: one reading per process
    one.work(codes=100)
    clock.now += 2
    await sampler.sample()
    assert [s["up"] for s in sampler.columns()["sources"]] == [True, False]
    assert "refused" in sampler.columns()["sources"][1]["error"]
    failing = False
    clock.now += 2
    await sampler.sample()  # two's first reading: no rate of its own yet; one did nothing
    one.work(codes=100)
    two.work(codes=300)
    clock.now += 2
    await sampler.sample()
    columns = sampler.columns()
    assert columns["codes_per_s"] == [None, 50.0, 0.0, 200.0]
    assert columns["flags_per_s"]["duplicate_payment"][-1] == 2.0  # (2 + 2) / 2 s
    assert columns["consumer_lag"]["2"][-1] == 30
    assert columns["dlq_total"][-1] == 3  # totals, not rates: 2 at one, 1 at two
    assert columns["gate_p99_ms"][-1] is not None
    assert columns["gate_p50_ms"][-1] == pytest.approx(10.0)
    assert [s["up"] for s in columns["sources"]] == [True, True]
    assert len(columns["t"]) == 4


async def test_a_restarted_process_counts_its_new_work_and_the_buffer_keeps_an_hour() -> None:
    clock = Clock()
    process = MetricsSource()
    process.work(codes=1000)
    sampler = Sampler([Source("p", _scrape(process))], SeriesBuffer(1800.0), clock)  # type: ignore[arg-type]
    await sampler.sample()
    restarted = MetricsSource()
    restarted.work(codes=60)
    sampler.sources[0].scrape = _scrape(restarted)  # type: ignore[assignment]
    clock.now += 60
    await sampler.sample()
    assert sampler.columns()["codes_per_s"] == [None, 1.0]
    clock.now += 1800
    await sampler.sample()
    assert len(sampler.columns()["t"]) == 2  # an hour at 30-minute samples
