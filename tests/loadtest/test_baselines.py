"""The baselines against the workload's ground truth: their correctness fields, never their
speed. Baseline (d) must be exact and write the rows tracegate's record would; the Quix rows
must catch every re-use of a code and show what they get wrong (a redelivery, a resale after
a reversal or more units of an opened pack are duplicates to them)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

import asyncpg
import msgspec
import pytest

from loadtest import report
from loadtest.baselines.postgres_batched import rules
from loadtest.baselines.postgres_batched.consumer import corrections
from loadtest.pgbatchrun import own_database, run_postgres_batched
from loadtest.quixrun import run_quix
from loadtest.stack import Stack
from loadtest.truth import REUSE_ONLY, reuse_flags, simulate
from loadtest.workload import Institution, Workload
from service.policy.schemas import PolicyConfig
from service.settings import Settings
from service.settlements.events import SettlementEvent

SHOP = Institution("P00000000001", "retail_pharmacy", None)
CLINIC = Institution("P00000000002", "primary", None)
A, B, C, X = ("81234560000000000011", "81234560000000000028", "81234560000000000035",
              "81234560000000000042")
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def _sale(sid: str, inst: Institution, *lines: dict[str, Any]) -> dict[str, Any]:
    return {"type": "settlement", "settlement_id": sid, "institution_id": inst.institution_id,
            "settled_at": "2025-05-20T10:00:00+08:00",
            "lines": [{"line_no": n, **line} for n, line in enumerate(lines, start=1)]}


def _whole(*codes: str) -> dict[str, Any]:
    return {"drug_code": "X", "quantity": len(codes), "split": False, "trace_codes": list(codes)}


def _split(code: str, units: int) -> dict[str, Any]:
    return {"drug_code": "X", "quantity": units, "split": True, "pack_size": 10,
            "trace_codes": [code]}


# One batch of chains (all enforced): a line refused for a re-used code does not claim its
# fresh one (C), which a later settlement then pays first; a split pack opened, sold again,
# over-used, sold whole at another institution; a reversal gives A and B back for a resale.
CHAINS = [
    _sale("S1", SHOP, _whole(A, B)),
    _sale("S2", SHOP, _whole(B, C)),
    _sale("S3", CLINIC, _whole(C)),
    _sale("S4", SHOP, _split(X, 3)),
    _sale("S5", SHOP, _split(X, 4)),
    _sale("S6", SHOP, _split(X, 5)),
    _sale("S7", CLINIC, _whole(X)),
    {"type": "reversal", "settlement_id": "S1", "reversal_id": "R1"},
    _sale("S8", CLINIC, _whole(A)),
]


def _decided(events: list[dict[str, Any]]) -> tuple[list[Any], rules.Outcome]:
    settings, policy = Settings(), PolicyConfig.from_settings(Settings())
    key = settings.patient_hash_key.get_secret_value()
    items: list[rules.Arrival | rules.Reversal] = []
    for body in events:
        if body["type"] == "reversal":
            items.append(rules.Reversal(body["settlement_id"], body["reversal_id"], NOW))
        else:
            event = msgspec.convert(body, SettlementEvent)
            items.append(rules.check(event, msgspec.json.encode(body), True, policy, key))
    staged = rules.staged(items, [])
    return staged, rules.decide(items, {}, {}, NOW)


def test_a_batch_of_chains_is_decided_as_the_ground_truth_decides_it() -> None:
    staged, outcome = _decided(CHAINS)
    truth = simulate([SHOP, CLINIC], CHAINS)
    flags = {(f.kind, f.settlement_id, f.line_no, f.trace_code) for f in outcome.flags}
    assert flags == truth.flags
    assert ("duplicate_payment", "S2", 1, B) in flags
    assert ("split_overuse", "S6", 1, X) in flags
    # What the first-seen insert wrote (each code's first payable row), corrected, is the
    # truth's end: C held by S3 (not S2, whose line was refused), X opened by S4 with 7 of
    # its 10 units sold, A resold by S8 after the reversal, B given back.
    table = {row[1]: rules.inserted_claim(row) for row in reversed(staged) if row[-1]}
    deletes, upserts = corrections(staged, {}, outcome.claims)
    for code in deletes:
        del table[code]
    table.update(upserts)
    assert {code: claim.owner for code, claim in table.items()} == {
        A: ("S8", 1), C: ("S3", 1), X: ("S4", 1)}
    assert table[X].units_used == 7
    assert set(deletes) == {B}
    assert set(upserts) == {A, C, X}
    payments = Counter((e[0], e[2]) for e in outcome.events)
    assert payments[(A, "reversal")] == payments[(B, "reversal")] == 1


def test_a_line_paid_before_go_live_keeps_its_findings_as_warnings() -> None:
    policy = PolicyConfig.from_settings(Settings())
    body = _sale("S1", SHOP, _whole(A, A))
    event = msgspec.convert(body, SettlementEvent)
    arrival = rules.check(event, b"{}", False, policy, "k")  # not enforced yet
    outcome = rules.decide([arrival], {}, {}, NOW)
    flags = [(f.kind, f.line_no, f.trace_code) for f in outcome.flags]
    assert flags == [("duplicate_payment", 1, A)]  # the double scan, flagged whatever
    assert outcome.claims == {A: rules.Claim("S1", 1, SHOP.institution_id,
                                             event.settled_at_instant)}
    assert outcome.settlements[0][6] == "pay"  # decision: paid, the findings warnings


def test_postgres_batched_is_exact_and_writes_the_record_tracegate_would(
    tiny: tuple[Stack, Workload],
) -> None:
    stack, workload = tiny
    result = run_postgres_batched(stack, workload, 1)
    truth = workload.truth
    assert result["correct"], result["runs"][0]["checks"]
    flags = result["flags"]
    assert flags["expected"] == len(truth.flags) > 0
    assert (flags["found"], flags["matched"]) == (len(truth.flags), len(truth.flags)), flags
    assert (flags["missed"], flags["false"], flags["doubled"]) == (0, 0, 0), flags
    assert result["record"] == truth.to_json()
    assert result["cpu_us_per_code"]["consumers"] > 0, result["cpu_us_per_code"]
    histories, holders = asyncio.run(_record(own_database(stack, workload).dsn))
    assert histories == {code: sorted(events) for code, events in truth.histories.items()}
    assert holders == {code: owner for code, owner in truth.holders.items() if owner}


async def _record(dsn: str) -> tuple[dict[str, list[Any]], dict[str, tuple[str, int]]]:
    """Every code's history (as the truth's events) and each whole pack's holder."""
    connection = await asyncpg.connect(dsn)
    try:
        events = await connection.fetch(
            "SELECT code, type, settlement_id, line_no, duplicate FROM code_events "
            "WHERE settlement_id NOT LIKE 'WARM-%'")
        claims = await connection.fetch(
            "SELECT code, settlement_id, line_no FROM code_claims WHERE units_used IS NULL")
    finally:
        await connection.close()
    histories: dict[str, list[Any]] = {}
    for code, kind, sid, line_no, duplicate in events:
        histories.setdefault(code, []).append((kind, sid, line_no, duplicate))
    return ({code: sorted(found) for code, found in histories.items()},
            {code: (sid, line_no) for code, sid, line_no in claims})


@pytest.mark.parametrize("changelog", [False, True], ids=["rocksdb", "changelog"])
def test_quix_catches_every_reuse_and_counts_what_it_gets_wrong(
    tiny: tuple[Stack, Workload], changelog: bool,
) -> None:
    stack, workload = tiny
    result = run_quix(stack, workload, changelog)
    assert "error" not in result, result["error"]
    flags = result["flags"]
    assert flags["scope"] == REUSE_ONLY
    assert flags["expected"] == len(reuse_flags(workload.truth.flags)) > 0
    assert (flags["matched"], flags["missed"]) == (flags["expected"], 0), flags
    # Redeliveries and legitimate re-sales are duplicates to a first-seen store.
    assert flags["false"] > 0, flags
    assert flags["found"] == flags["matched"] + flags["false"] + flags["doubled"]
    assert flags["found"] == result["duplicates"]
    assert not result["correct"]
    assert result["processing_guarantee"] == "at-least-once"
    assert result["cpu_us_per_code"]["quix"] > 0, result
    if changelog:  # every code first seen was written to the store's changelog topic
        assert result["changelog_messages"] == result["codes"] - result["duplicates"]


def test_the_baselines_report_names_each_row_with_its_flags() -> None:
    scored = {"scope": REUSE_ONLY, "expected": 5, "found": 8, "matched": 5, "missed": 0,
              "false": 2, "doubled": 1, "exact": False}
    section = {"stream": {"codes_per_s": 90},
               "baselines": {"quixstreams": {"codes_per_s": 30, "flags": scored,
                                             "cpu_us_per_code": {"quix": 50.0, "kafka": 10.0}},
                             "postgres_batched": {"codes_per_s": 100}}}
    section["ratios_vs_baselines"] = report.ratios({**section, "ceiling": {}})
    text = report.baselines_markdown(section)
    assert "| (c) Quix Streams + RocksDB | 30 | 3.0 |" in text
    assert "| (d) PostgreSQL batched consumer | 100 | 0.9 |" in text
    assert "| (c) Quix Streams + RocksDB | 60.0 (quix 50.0, kafka 10.0) | code re-use | " \
        "5 | 8 | 5 | 0 | 2 | 1 |" in text
