"""The load-test instrument on tiny sizes: the generator's ground truth, and the code paths of
`tracegate loadtest all --quick` against real embedded servers. No timed assertions: speed
targets live in loadtest/results, never in the suite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest import report
from loadtest.baselines.simple import codes_of, run_postgres_only, run_redis_key_per_code
from loadtest.gate import run_gate
from loadtest.memory import run_memory
from loadtest.rebuild import run_rebuild
from loadtest.stack import Stack, open_stack
from loadtest.stream import run_stream
from loadtest.truth import simulate
from loadtest.workload import Institution, Workload, generate

SHOP = Institution("P00000000001", "retail_pharmacy", None)
CLINIC = Institution("P00000000002", "primary", dt.date(2025, 9, 1))
A, B = "81234560000000000011", "81234560000000000028"


def _sale(sid: str, inst: Institution, codes: list[str], when: str = "2025-05-01") -> Any:
    line = {"line_no": 1, "drug_code": "X", "quantity": len(codes), "split": False,
            "trace_codes": codes}
    return {"type": "settlement", "settlement_id": sid, "institution_id": inst.institution_id,
            "settled_at": f"{when}T10:00:00+08:00", "lines": [line]}


def test_truth_flags_a_second_payment_but_not_a_redelivery_or_a_resale_after_reversal() -> None:
    first = _sale("S1", SHOP, [A])
    events = [first, first, _sale("S2", CLINIC, [A]),
              {"type": "reversal", "settlement_id": "S1", "reversal_id": "R1"},
              _sale("S3", SHOP, [A]), _sale("S4", SHOP, [B, B])]
    truth = simulate([SHOP, CLINIC], events)
    assert truth.flags == {("duplicate_payment", "S2", 1, A), ("duplicate_payment", "S4", 1, B)}
    assert truth.claims == 1  # S3 holds A again; S4's line was refused (enforced)


def test_truth_reports_refusals_only_once_enforced() -> None:
    missing = _sale("S1", CLINIC, [])  # the clinic goes live on 2025-09-01
    late = _sale("S2", CLINIC, [], when="2025-09-02")
    truth = simulate([CLINIC], [missing, late])
    assert truth.flags == {("missing_code", "S2", 1, None)}


def test_generator_is_seeded_and_mixes_every_finding() -> None:
    one, two = generate(3000, seed=7), generate(3000, seed=7)
    assert [e.body for e in one.events] == [e.body for e in two.events]
    kinds = {flag[0] for flag in one.truth.flags}
    assert {"duplicate_payment", "missing_code", "invalid_code", "quantity_mismatch"} <= kinds
    assert any(e.body["type"] == "reversal" for e in one.events)
    assert len({e.key for e in one.events if e.body["type"] == "settlement"}) == 3000


@pytest.fixture(scope="module")
def tiny() -> Iterator[tuple[Stack, Workload]]:
    workload = generate(300, seed=3)
    stack = open_stack(workload.institutions)
    try:
        yield stack, workload
    finally:
        stack.close()


def test_stream_run_matches_the_ground_truth(tiny: tuple[Stack, Workload]) -> None:
    stack, workload = tiny
    run = run_stream(stack, workload, 1, 0.0, "t1")
    assert run.correct, run.checks
    figures = run.to_json()
    assert figures["codes"] == workload.codes
    # Where the CPU went, by role. /proc counts in 10 ms ticks, so in a run this small only
    # the consumer is sure to show; the producer and the harness time themselves.
    cpu = figures["cpu_us_per_code"]
    assert set(cpu) == {"consumers", "postgres", "redis", "kafka", "producer", "harness"}
    assert min(cpu.values()) >= 0, cpu
    assert all(cpu[role] > 0 for role in ("consumers", "producer", "harness")), cpu


def test_store_gate_and_baseline_paths_produce_figures(
    tiny: tuple[Stack, Workload], tmp_path: Path
) -> None:
    stack, workload = tiny
    codes = codes_of(workload, 500)
    results: dict[str, Any] = {
        "stream": {"codes_per_s": 1, "codes_per_s_2_consumers": 1, "correct": True,
                   "flag_latency_ms": {"p50": 1, "p95": 1, "p99": 1}},
        "gate": {"rates": run_gate(stack, workload.institutions, [50], 0.5, "tg")},
        "memory": run_memory(stack.redis_url, 2000, lambda n: None),
        "rebuild": run_rebuild(stack.dsn, stack.redis_url, stack.postgres.pid,
                               workload.institutions, 2000, 2, lambda n: None),
        "baselines": {"redis_key_per_code": run_redis_key_per_code(stack.redis_url, codes,
                                                                   lambda n: None),
                      "postgres_only": run_postgres_only(stack.dsn, codes, lambda n: None),
                      "quixstreams": {"codes_per_s": None}},
        "ceiling": {"redis_ops_per_s": None},
        "meta": {"quick": True, "command": "x", "machine": {"cpus": 2, "memory_gb": 1},
                 "notes": []},
    }
    gate = results["gate"]["rates"][0]
    assert gate["errors"] == 0
    # Where a call's CPU went: the API's workers and the generator always spend some.
    assert set(gate["cpu_us_per_call"]) == {"api", "postgres", "redis", "kafka", "generator"}
    assert gate["cpu_us_per_call"]["api"] > 0, gate
    assert gate["cpu_us_per_call"]["generator"] > 0, gate
    assert results["rebuild"]["codes"] == 2000
    assert [run["codes"] for run in results["rebuild"]["runs"]] == [2000, 2000]
    assert results["rebuild"]["correct"] is True  # the set read back as Python encodes it
    rebuild_cpu = results["rebuild"]["cpu_us_per_code"]
    assert set(rebuild_cpu) == {"rebuilder", "postgres", "redis"}
    assert rebuild_cpu["rebuilder"] > 0, rebuild_cpu
    json_path, md_path = report.write(results, tmp_path)
    assert "memory B/code" in md_path.read_text()
    assert json_path.is_file()


def test_a_full_run_shows_its_tables_in_the_readme(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "stream": {"codes_per_s": 7, "codes_per_s_2_consumers": 9, "correct": True,
                   "flag_latency_ms": {"p50": 1, "p95": 2, "p99": 3},
                   "cpu_us_per_code": {"consumers": 80.5, "redis": 9.0}},
        "gate": {"rates": [{"rate": 500, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3, "max_ms": 4,
                            "errors": 0, "cpu_us_per_call": {"api": 1500.0, "redis": 500.0}}]},
        "memory": {"bytes_per_code": 20.8}, "rebuild": {"codes_per_s": 5},
        "baselines": {"redis_key_per_code": {"codes_per_s": 1},
                      "postgres_only": {"codes_per_s": 1}, "quixstreams": {"codes_per_s": 1}},
        "ceiling": {"redis_ops_per_s": None},
        "meta": {"quick": True, "command": "tracegate loadtest all",
                 "machine": {"cpus": 2, "memory_gb": 1}, "notes": []},
    }
    report.write(results, tmp_path)  # adds the verdicts the tables show
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{report.README_BEGIN}\nold\n{report.README_END}\nafter\n")
    assert not report.show_in_readme(results, readme)  # a quick run does not stand there
    assert "old" in readme.read_text()
    results["meta"]["quick"] = False
    for _ in range(2):  # and writing it again replaces, not appends
        assert report.show_in_readme(results, readme)
    text = readme.read_text()
    assert "old" not in text
    assert text.count("| stream codes/s (1 consumer) | 7 |") == 1
    assert "CPU per code, 1 consumer, µs (every process shares the same cores): consumers " \
        "80.5 · redis 9.0. In all 89.5 µs a code: 2 CPUs carry at most 22,346 codes/s at " \
        "this cost." in text
    assert "CPU per gate call at 500/s, µs: api 1500.0 · redis 500.0. In all 2,000.0 µs a " \
        "call: 2 CPUs carry at most 1,000 calls/s at this cost." in text
    assert text.startswith("# x\nbefore\n")
    assert text.endswith(f"{report.README_END}\nafter\n")
    assert "# tracegate load test" not in text
