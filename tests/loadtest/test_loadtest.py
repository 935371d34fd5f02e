"""The load-test instrument on tiny sizes: the generator's ground truth, and the code paths of
`tracegate loadtest all --quick` against real embedded servers. No timed assertions: speed
targets live in loadtest/results, never in the suite."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest import report
from loadtest.baselines.simple import run_postgres_only, run_redis_key_per_code, sample
from loadtest.gate import SERVER_ROLES, run_floor, run_gate
from loadtest.gatetruth import (
    FRESH,
    REPLAY,
    REUSE,
    Mix,
    SettleTruth,
    VerifyTruth,
    check_answer,
    check_verify,
    plan,
)
from loadtest.memory import run_memory
from loadtest.rebuild import run_rebuild
from loadtest.stack import Stack
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


def _answer(sid: str, decision: str = "pay", reasons: list[Any] | None = None,
            flags: list[str] | None = None) -> dict[str, Any]:
    """A gate answer of the contract's shape (CONTRACT §4)."""
    return {"settlement_id": sid, "decision": decision, "enforced": True, "replayed": False,
            "lines": [{"line_no": 1, "decision": decision, "reasons": reasons or []}],
            "flags": flags or []}


def _duplicate(code: str, first_sid: str, first_institution: str) -> dict[str, Any]:
    return {"code": "DUPLICATE_PAYMENT", "severity": "error", "trace_code": code,
            "first_payment": {"settlement_id": first_sid, "institution_id": first_institution,
                              "paid_at": "2026-01-01T00:00:00+08:00"}}


def _truth(kinds: list[str]) -> SettleTruth:
    return SettleTruth(11, ["P00000000001", "P00000000002"], "u", kinds)


def test_gate_truth_takes_the_right_answer_and_catches_a_tampered_one() -> None:
    truth = _truth([FRESH, REUSE, REPLAY])
    fresh = truth.call(0)
    right = _answer(fresh.label)
    tampered: dict[str, Any]
    for tampered in ({**right, "decision": "reject"}, {**right, "replayed": True},
                     {**right, "flags": ["f-1"]}, {**right, "settlement_id": "G-other"},
                     {"lines": []}):
        assert fresh.check(orjson.dumps(tampered)) is not None, tampered
    assert fresh.check(b"not json") is not None
    assert truth.paid_codes == []  # a wrong answer teaches the truth nothing
    assert fresh.check(orjson.dumps(right)) is None
    assert len(truth.paid_codes) == 3

    reuse = truth.call(1)  # re-uses a code the first call was paid for, elsewhere
    first = truth.answered[0][1]
    body = orjson.loads(reuse.body)
    code = body["lines"][0]["trace_codes"][-1]
    assert reuse.kind == REUSE
    assert code in first.codes
    assert body["institution_id"] != first.institution_id
    right_reuse = _answer(reuse.label, "reject", [_duplicate(code, first.settlement_id,
                                                             first.institution_id)], ["f-1"])
    wrong_first = _answer(reuse.label, "reject", [_duplicate(code, "G-someone-else",
                                                             first.institution_id)], ["f-1"])
    assert reuse.check(orjson.dumps(wrong_first)) is not None
    assert reuse.check(orjson.dumps({**right_reuse, "flags": []})) is not None
    assert reuse.check(orjson.dumps(_answer(reuse.label))) is not None  # paid twice
    assert reuse.check(orjson.dumps(right_reuse)) is None

    replay = truth.call(2)  # the body of an answered call again
    prior = next(a for b, _, a in truth.answered if b == replay.body)
    assert replay.kind == REPLAY
    assert replay.check(prior) is not None  # replayed: false
    assert replay.check(orjson.dumps({**orjson.loads(prior), "replayed": True})) is None


def test_gate_truth_sends_a_fresh_call_until_something_was_answered() -> None:
    truth = _truth([REUSE, REPLAY])
    assert [truth.call(0).kind, truth.call(1).kind] == [FRESH, FRESH]
    kinds = plan(10_000, Mix(0.02, 0.01), seed=1)
    assert plan(10_000, Mix(0.02, 0.01), seed=1) == kinds
    assert 100 < kinds.count(REUSE) < 300
    assert 40 < kinds.count(REPLAY) < 170


def test_verify_truth_catches_a_wrong_status() -> None:
    truth = VerifyTruth(88, ["81100000000000000000"], "P00000000001", seed=4)
    call = truth.call(0)
    codes = orjson.loads(call.body)["trace_codes"]
    statuses = ["paid" if code == "81100000000000000000" else "unpaid" for code in codes]
    results = [{"trace_code": c, "valid": True, "format": "cn20", "canonical": c, "status": s}
               for c, s in zip(codes, statuses, strict=True)]
    assert call.check(orjson.dumps({"results": results})) is None
    flipped = [{**results[0], "status": "unpaid" if statuses[0] == "paid" else "paid"},
               *results[1:]]
    assert call.check(orjson.dumps({"results": flipped})) is not None
    assert call.check(orjson.dumps({"results": results[:2]})) is not None
    assert check_verify(truth.request(1)[1], b"{}") is not None
    assert check_answer(_truth([FRESH]).request(0, FRESH)[1], b"[]") is not None


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
    codes = sample(workload, 500)
    results: dict[str, Any] = {
        "stream": {"codes_per_s": 1, "codes_per_s_2_consumers": 1, "correct": True,
                   "flag_latency_ms": {"p50": 1, "p95": 1, "p99": 1}},
        # Re-uses and replays far more often than in the benchmark: a tiny run checks each.
        "gate": run_gate(stack, workload.institutions, [50], 1.0, "tg", mix=Mix(0.2, 0.1),
                         verify_rate=50),
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
    results["gate"]["floor"] = run_floor(stack, [50], 1.0, "tg", 50)
    gate = results["gate"]["rates"][0]
    assert (gate["errors"], gate["sheds"], gate["answered"]) == (0, 0, 50), gate["statuses"]
    # Every answer checked against the ground truth, re-uses and replays among them.
    assert results["gate"]["correct"], results["gate"]
    assert gate["correct"], gate["mismatches"]
    assert gate["mismatches"]["count"] == 0
    assert gate["kinds"].get("reuse", 0) > 0, gate
    assert gate["kinds"].get("replay", 0) > 0, gate
    # Where a call's CPU went: the API's workers and the generator always spend some.
    assert set(gate["cpu_us_per_call"]) == {"api", "postgres", "redis", "kafka", "generator"}
    assert gate["cpu_us_per_call"]["api"] > 0, gate
    assert gate["cpu_us_per_call"]["generator"] > 0, gate
    assert gate["server_sum_us_per_call"] == pytest.approx(
        sum(gate["cpu_us_per_call"][role] for role in SERVER_ROLES), abs=0.2)
    verify = results["gate"]["verify"]
    assert verify["correct"], verify
    assert verify["kinds"] == {"verify": 50}, verify
    assert verify["paid_codes_asked_of"] > 0
    assert verify["errors"] == 0
    assert verify["cpu_us_per_call"]["api"] > 0, verify
    # The floor answered every call of its settle and verify runs, and was measured.
    floor = results["gate"]["floor"]
    for row in (*floor["rates"], floor["verify"]):
        assert (row["errors"], row["answered"]) == (0, 50), row["statuses"]
        assert row["cpu_us_per_call"]["api"] > 0, row
    for name in ("redis_key_per_code", "postgres_only"):  # every re-use caught, and more
        flags = results["baselines"][name]["flags"]
        assert flags["expected"] == len(codes.expected) > 0, flags
        assert (flags["matched"], flags["missed"]) == (flags["expected"], 0), flags
        assert flags["found"] == results["baselines"][name]["duplicates_seen"]
        assert results["baselines"][name]["cpu_us_per_code"]["client"] > 0
    assert results["rebuild"]["codes"] == 2000
    assert [run["codes"] for run in results["rebuild"]["runs"]] == [2000, 2000]
    assert results["rebuild"]["correct"] is True  # the set read back as Python encodes it
    rebuild_cpu = results["rebuild"]["cpu_us_per_code"]
    assert set(rebuild_cpu) == {"rebuilder", "postgres", "redis"}
    assert rebuild_cpu["rebuilder"] > 0, rebuild_cpu
    json_path, md_path = report.write(results, tmp_path)
    text = md_path.read_text()
    assert "memory B/code" in text
    assert "| 50 | " in text
    assert "Verify (`POST /v1/codes/verify`, 3 codes a call" in text
    assert "| settle @50/s | " in text  # the floor's rows
    assert "| verify @50/s | " in text
    assert json_path.is_file()


def _row(rate: int, **figures: Any) -> dict[str, Any]:
    """A gate rate's row as loadtest.gate writes it, with the figures given."""
    return {"rate": rate, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3, "max_ms": 4,
            "answered_p99_ms": 3, "errors": 0, "sheds": 0, "correct": True,
            "server_sum_us_per_call": 100.0, "cpu_us_per_call": {"api": 100.0}, **figures}


def test_a_full_run_shows_its_tables_in_the_readme(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "stream": {"codes_per_s": 7, "codes_per_s_2_consumers": 9, "correct": True,
                   "flag_latency_ms": {"p50": 1, "p95": 2, "p99": 3},
                   "flag_latency_at_codes_per_s": 20_000.0,
                   "flag_latency_2_consumers_ms": {"p50": 4, "p95": 5, "p99": 6},
                   "flag_latency_within_capacity": {"codes_per_s": 3.0,
                                                    "ms": {"p50": 1, "p95": 1, "p99": 2}},
                   "cpu_us_per_code": {"consumers": 80.5, "redis": 9.0}},
        "gate": {"rates": [_row(500, cpu_us_per_call={"api": 1500.0, "redis": 500.0},
                                server_sum_us_per_call=2000.0),
                           _row(2000, p99_ms=8, sheds=3), _row(4000, answered_p99_ms=900)],
                 "verify": {**_row(500, server_sum_us_per_call=250.0), "codes_per_call": 3,
                            "cpu_us_per_call": {"api": 200.0, "redis": 50.0}},
                 "floor": {"rates": [_row(500, server_sum_us_per_call=1000.0)],
                           "verify": _row(500, server_sum_us_per_call=200.0)},
                 "correct": True},
        "memory": {"bytes_per_code": 20.8}, "rebuild": {"codes_per_s": 5},
        "baselines": {"redis_key_per_code": {"codes_per_s": 1},
                      "postgres_only": {"codes_per_s": 1}, "quixstreams": {"codes_per_s": 1},
                      "quixstreams_changelog": {"codes_per_s": 2},
                      "postgres_batched": {"codes_per_s": 10}},
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
    assert "The gate's own processes (API, Redis, PostgreSQL, Kafka; not the load " \
        "generator): 2,000.0 µs a call (target ≤ 600)." in text
    assert "| 2000 | 1 | 2 | 8 | 3 | 4 | 3 | 0 | True | 100.0 |" in text  # sheds apart
    assert "| gate p99 ms @2000/s | 8 (3 sheds) | <= 10 | no |" in text  # a shed fails it
    assert "| gate answered p99 ms @4000/s | 900 | <= 1000 | yes |" in text
    assert "| gate server CPU µs/call @500/s | 2000.0 | <= 600 | no | 3.33× |" in text
    assert "| verify server CPU µs/call @500/s | 250.0 | <= 300 | yes |" in text
    assert "Verify (`POST /v1/codes/verify`, 3 codes a call, paid earlier or never settled) " \
        "at 500/s: p50 1 ms, p95 2 ms, p99 3 ms (answered 3 ms), 0 sheds, 0 errors, " \
        "correct: True." in text
    assert "Flag latency at 20,000 codes/s with two consumers: p50 4 ms, p95 5 ms, p99 6 ms." \
        in text
    # The gate beside its floor at the same rate: 2,000 µs against 1,000; verify 250 / 200.
    assert "| settle @500/s | 1 | 3 | 0 | 1000.0 | 2000.0 | 2.0 |" in text
    assert "| verify @500/s | 1 | 3 | 0 | 200.0 | 250.0 | 1.25 |" in text
    assert "| stream codes/s ÷ (c) Quix Streams | 7.0 | >= 3 | yes |" in text
    assert "| stream codes/s ÷ (d) PostgreSQL batched | 0.7 | >= 0.9 | no | 1.29× |" in text
    assert "| (c′) Quix Streams + RocksDB + changelog | 2 | 3.5 |" in text
    assert "| (d) PostgreSQL batched consumer | 10 | 0.7 |" in text
    assert text.startswith("# x\nbefore\n")
    assert text.endswith(f"{report.README_END}\nafter\n")
    assert "# tracegate load test" not in text
