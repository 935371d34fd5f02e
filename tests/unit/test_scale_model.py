"""SCALE.md's arithmetic (loadtest/scale_model.py) on a small fixed results file: every figure
follows from the per-unit inputs by the sums the tables show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest import scale_model as m


def _latest(record: bool = True) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "codes_per_s": 10_000,
        "cpu_us_per_code": {"consumers": 100.0, "postgres": 20.0, "redis": 10.0, "kafka": 5.0},
        "workload": {"settlements": 1_000, "events": 1_500, "codes": 4_000, "flags": 40},
    }
    if record:
        stream["record"] = {"bytes_per_code": 400.0,
                            "rows_per_code": {"code_events": 1.0, "code_claims": 0.9},
                            "tables": {"code_events": {"rows": 4_000, "bytes": 1_000_000},
                                       "code_claims": {"rows": 3_600, "bytes": 600_000},
                                       "flags": {"rows": 0, "bytes": 0}}}
        stream["event_bytes_per_code"] = 250.0
    return {"meta": {"command": "tracegate loadtest all"}, "stream": stream,
            "gate": {"rates": [{"rate": 500, "cpu_us_per_call": {
                "api": 2_000.0, "redis": 200.0, "postgres": 100.0, "kafka": 50.0}}]},
            "memory": {"bytes_per_code": 20.0}, "rebuild": {"codes_per_s": 500_000}}


def _cluster() -> dict[str, Any]:
    return {"meta": {"command": "tracegate loadtest cluster --quick", "redis_primaries": 3},
            "stream": {"codes_per_s": 9_000, "codes_per_s_2_consumers": 14_000,
                       "correct": True, "cpu_us_per_code": {
                           "consumers": 90.0, "redis-1": 4.0, "redis-2": 4.0, "redis-3": 2.0}},
            "gate": {"rates": [{"rate": 500, "p99_ms": 12.0, "errors": 0}]}}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    (tmp_path / "latest.json").write_text(json.dumps(_latest()))
    (tmp_path / "cluster.json").write_text(json.dumps(_cluster()))
    return tmp_path


def test_rates_follow_the_national_figures(results: Path) -> None:
    inputs = m.load(results)
    assert inputs.codes_per_settlement == 4.0
    r = m.rates(inputs)
    assert r["avg_codes_s"] == pytest.approx(250_000_000 / 86_400)
    assert r["peak_calls_s"] == 7_500  # 30,000 codes/s at 4 codes a settlement
    assert r["peak_events_s"] == 30_000 * 1_500 / 4_000


def test_consumers_and_partitions(results: Path) -> None:
    inputs = m.load(results)
    c = m.consumers(inputs)
    assert c["cores"] == pytest.approx(3.0)  # 30,000 × 100 µs
    assert c["per_process"] == pytest.approx(10_000)
    assert c["peak"] == 6  # 30,000 / (10,000 × 0.5)
    assert c["catch_up"] == 6  # 2 × 30,000 / 10,000
    k = m.kafka(inputs)
    assert k["partitions"] == 12  # 6 × 2, a multiple of 6
    assert k["day_gb"] == pytest.approx(250_000_000 * 250 / 1e9)
    assert k["retained_tb"] == pytest.approx(250_000_000 * 250 * 7 * 3 / 1e12)


def test_api_workers(results: Path) -> None:
    a = m.api(m.load(results))
    assert a["cores"] == pytest.approx(15.0)  # 7,500 calls/s × 2,000 µs
    assert a["workers"] == 30


def test_redis_memory_primaries_and_rebuild(results: Path) -> None:
    r = m.redis(m.load(results))
    hot = 250_000_000 * 365 / 12 * 12
    assert r["hot_codes"] == pytest.approx(hot)
    assert r["all_tb"] == pytest.approx(100e9 * 20 / 1e12)  # 2.0 TB
    assert r["primaries"] == 38  # ceil(1.825 TB × 1.3 / 64 GB)
    assert r["bucket_bits"] == 17  # ceil(log2(91.25e9 / (64 × 16,384)))
    assert r["rebuild_h_hot"] == pytest.approx(hot / 500_000 / 3600)
    assert r["cores"] == pytest.approx((30_000 * 10 + 7_500 * 200) / 1e6)


def test_postgres_storage(results: Path) -> None:
    p = m.postgres(m.load(results))
    assert p["year_tb"] == pytest.approx(91.25e9 * 400 / 1e12)  # 36.5 TB
    assert p["stored_tb"] == pytest.approx(73.0)
    assert p["workers"] == 10  # ceil(36.5 / 4)
    assert p["month_rows"] == pytest.approx(250_000_000 * 365 / 12)
    # the row names the tables the figure counts (a table of no bytes is not one of them)
    assert "code_events + code_claims / codes | 400.0 |" in m.markdown(m.load(results))


def test_record_figures_fall_back_to_the_cluster_run(tmp_path: Path) -> None:
    cluster = _cluster()
    cluster["stream"]["record"] = {"bytes_per_code": 333.0, "rows_per_code": {}, "tables": {}}
    (tmp_path / "latest.json").write_text(json.dumps(_latest(record=False)))
    (tmp_path / "cluster.json").write_text(json.dumps(cluster))
    inputs = m.load(tmp_path)
    assert inputs.record_bytes_per_code == 333.0
    assert inputs.sources["record"] == "cluster.json"
    assert inputs.event_bytes_per_code is None  # measured by neither: the rows are left out
    assert "ingress MB/s" not in m.markdown(inputs)


def test_per_node_shares_from_the_cluster_run(results: Path) -> None:
    text = m.markdown(m.load(results))
    assert "| redis-1 | 4.0 | 40% |" in text
    assert "| redis-3 | 2.0 | 20% |" in text
    assert "| all nodes | 10.0 |" in text


def test_only_the_tables_between_the_markers_are_rewritten(
    results: Path, tmp_path: Path
) -> None:
    page = tmp_path / "SCALE.md"
    page.write_text(f"# prose before\n\n{m.BEGIN}\nold tables\n{m.END}\n\nprose after\n")
    m.write_scale_md(page, results)
    text = page.read_text()
    assert text.startswith("# prose before\n")
    assert text.endswith("\n\nprose after\n")
    assert "old tables" not in text
    assert "| API workers (one per core) | 15.0 / 0.5 | 30 |" in text


def test_a_figure_the_results_lack_is_named_not_fatal(tmp_path: Path) -> None:
    """A load-test rewrite may rename a key or drop a benchmark: the tables that need it say
    which figure is missing, the others are computed as before."""
    latest = _latest()
    del latest["gate"]["rates"][0]["cpu_us_per_call"]
    del latest["memory"]
    (tmp_path / "latest.json").write_text(json.dumps(latest))
    text = m.markdown(m.load(tmp_path))
    assert "### Consumers and API workers\n\nNot computed: latest.json has no " \
           "`gate.rates.0.cpu_us_per_call.api`" in text
    assert "### Redis (the first-seen set)\n\nNot computed: latest.json has no " \
           "`memory.bytes_per_code`" in text
    assert "| settlement partitions |" in text  # Kafka needs neither
    assert "no cluster run" in text


def test_no_results_at_all_still_writes_the_page(tmp_path: Path) -> None:
    page = tmp_path / "SCALE.md"
    page.write_text(f"{m.BEGIN}\nold\n{m.END}\n")
    m.write_scale_md(page, tmp_path)
    assert page.read_text().count("Not computed: latest.json has no") == 5
