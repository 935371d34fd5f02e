"""The record of one run, read back from PostgreSQL and the output topics and compared with its
ground truth. Every count that is not zero (but the topic's doubles) is a broken promise."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import orjson

from service.settings import Settings
from tests.faults.stream import read_topic
from tests.faults.workload import FlagKey, GroundTruth

_EXAMPLES = 5  # of each kind of discrepancy, to say what went wrong


@dataclass
class RecordAudit:
    settlements_expected: int = 0
    settlements_recorded: int = 0
    settlements_missing: int = 0
    settlements_unexpected: int = 0  # recorded, yet never sent by anyone
    refused_recorded: int = 0  # settlements the gate refused with 503, recorded all the same
    payments_expected: int = 0
    payments_recorded: int = 0  # payment events of the run's codes
    payments_lost: int = 0  # codes without their payment event
    payments_doubled: int = 0  # payment events beyond one per code
    payments_misattributed: int = 0  # the code's payment is not its first payment
    claims_lost: int = 0  # paid codes without their row in code_claims (the arbiter)
    claims_misattributed: int = 0  # the claim is held by another line than the first payment
    payment_counters_off: int = 0  # institutions whose payment counter is not their payments
    flags_expected: int = 0
    flags_recorded: int = 0
    flags_missed: int = 0
    flags_false: int = 0  # recorded, not expected (from a redelivery, a lost claim, ...)
    flags_doubled: int = 0  # rows beyond one per (kind, settlement, line, code)
    flags_wrong: int = 0  # expected, but with another severity or first payment
    flags_unpublished: int = 0  # recorded, never marked as on the topic
    topic_flags_missing: int = 0  # recorded flags that never reached the flags topic
    topic_flags_unknown: int = 0  # on the topic but not in the record
    topic_flag_doubles: int = 0  # extra copies on the topic: at-least-once, reported only
    dead_letters: int = 0  # nothing in these streams deserves the DLQ
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problems(self, aspect: str | None = None) -> list[str]:
        """What broke `aspect` (one of ASPECTS), or every aspect."""
        aspects = [aspect] if aspect is not None else list(ASPECTS)
        found = []
        for name in aspects:
            counts = [f"{field} = {getattr(self, field)}" for field in ASPECTS[name]
                      if getattr(self, field)]
            found += [*counts, *self.examples.get(name, [])] if counts else []
        return found

    def figures(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "examples"}

    def note(self, aspect: str, text: str) -> None:
        notes = self.examples.setdefault(aspect, [])
        if len(notes) < _EXAMPLES:
            notes.append(text)


# The promises the record keeps, each with the counts that must be zero for it.
ASPECTS: dict[str, tuple[str, ...]] = {
    "settlements": ("settlements_missing", "settlements_unexpected", "dead_letters"),
    "refused": ("refused_recorded",),
    "payments": ("payments_lost", "payments_doubled", "payments_misattributed"),
    "claims": ("claims_lost", "claims_misattributed"),
    "counters": ("payment_counters_off",),
    "flags": ("flags_missed", "flags_false", "flags_doubled", "flags_wrong",
              "flags_unpublished", "topic_flags_missing", "topic_flags_unknown"),
}


async def audit(settings: Settings, truth: GroundTruth) -> RecordAudit:
    """Compare the record (PostgreSQL, the flags topic, the DLQ) with `truth`."""
    result = RecordAudit()
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await _settlements(connection, truth, result)
        await _payments(connection, truth, result)
        flag_ids = await _flags(connection, truth, result)
    finally:
        await connection.close()
    await _topics(settings, flag_ids, result)
    return result


async def _settlements(connection: Any, truth: GroundTruth, result: RecordAudit) -> None:
    rows = await connection.fetch(
        "SELECT settlement_id FROM settlements WHERE settlement_id LIKE $1", truth.prefix + "%")
    recorded = {row[0] for row in rows}
    expected = set(truth.settlements)
    result.settlements_expected, result.settlements_recorded = len(expected), len(recorded)
    result.settlements_missing = len(expected - recorded)
    result.settlements_unexpected = len(recorded - expected - truth.refused)
    result.refused_recorded = len(recorded & truth.refused)
    for sid in sorted(expected - recorded):
        result.note("settlements", f"settlement {sid} is not recorded")
    for sid in sorted(recorded - expected - truth.refused):
        result.note("settlements", f"settlement {sid} is recorded but was never sent")
    for sid in sorted(recorded & truth.refused):
        result.note("refused", f"settlement {sid} is recorded though the gate refused it (503)")


async def _payments(connection: Any, truth: GroundTruth, result: RecordAudit) -> None:
    codes = list(truth.owners)
    events = await connection.fetch(
        "SELECT code, settlement_id, line_no, duplicate FROM code_events "
        "WHERE type = 'payment' AND code = ANY($1::text[])", codes)
    claims = await connection.fetch(
        "SELECT code, settlement_id, line_no FROM code_claims WHERE code = ANY($1::text[])", codes)
    counters = await connection.fetch(
        "SELECT institution_id, payments FROM institution_stats "
        "WHERE institution_id = ANY($1::text[])", list(truth.payments))
    paid: dict[str, list[tuple[str, int, bool]]] = {}
    for code, sid, line_no, duplicate in events:
        paid.setdefault(code, []).append((sid, line_no, duplicate))
    claimed = {code: (sid, line_no) for code, sid, line_no in claims}
    result.payments_expected, result.payments_recorded = len(truth.owners), len(events)
    for code, owner in truth.owners.items():
        _payment(result, code, owner, paid.get(code, []))
        _claim(result, code, owner, claimed.get(code))
    # A settlement the gate refused but the record took anyway is the "refused" promise
    # broken; its payments are then counted too, and rightly so for the counters.
    made = truth.payments + Counter(dict(await connection.fetch(
        "SELECT institution_id, count(*) FROM code_events WHERE type = 'payment' "
        "AND settlement_id = ANY($1::text[]) GROUP BY institution_id", list(truth.refused))))
    got = {institution: payments for institution, payments in counters}
    for institution, payments in made.items():
        if got.get(institution, 0) != payments:
            result.payment_counters_off += 1
            result.note("counters", f"{institution}: {got.get(institution, 0)} payments "
                                    f"counted, {payments} made")


def _payment(
    result: RecordAudit, code: str, owner: tuple[str, int], paid: list[tuple[str, int, bool]]
) -> None:
    if not paid:
        result.payments_lost += 1
        result.note("payments", f"payment of {code} by {owner} is not recorded")
        return
    if len(paid) > 1:
        result.payments_doubled += len(paid) - 1
        result.note("payments", f"{code} has {len(paid)} payment events: {paid}")
    if (*owner, False) not in paid:
        result.payments_misattributed += 1
        result.note("payments", f"{code}: first payment {owner}, payment events {paid}")


def _claim(
    result: RecordAudit, code: str, owner: tuple[str, int], claim: tuple[str, int] | None
) -> None:
    if claim is None:
        result.claims_lost += 1
        result.note("claims", f"{code}: paid by {owner}, no row in code_claims")
    elif claim != owner:
        result.claims_misattributed += 1
        result.note("claims", f"{code}: first payment {owner}, claim held by {claim}")


async def _flags(connection: Any, truth: GroundTruth, result: RecordAudit) -> set[str]:
    rows = await connection.fetch(
        "SELECT flag_id, kind, severity, trace_code, settlement_id, line_no, first_payment, "
        "published FROM flags WHERE settlement_id LIKE $1", truth.prefix + "%")
    keys: Counter[FlagKey] = Counter()
    result.flags_expected, result.flags_recorded = len(truth.flags), len(rows)
    for row in rows:
        key: FlagKey = (row["kind"], row["settlement_id"], row["line_no"], row["trace_code"])
        keys[key] += 1
        expected = truth.flags.get(key)
        if expected is None:
            result.flags_false += 1
            result.note("flags", f"false flag {key}")
            continue
        first = orjson.loads(row["first_payment"]) if row["first_payment"] else None
        first_sid = first["settlement_id"] if first else None
        if (row["severity"], first_sid) != (expected.severity, expected.first_payment):
            result.flags_wrong += 1
            result.note("flags", f"flag {key}: {row['severity']}/{first_sid}, "
                                 f"expected {expected}")
        if not row["published"]:
            result.flags_unpublished += 1
    result.flags_doubled = sum(count - 1 for count in keys.values())
    missed = [key for key in truth.flags if key not in keys]
    result.flags_missed = len(missed)
    for key in missed:
        result.note("flags", f"missed flag {key}")
    return {row["flag_id"] for row in rows}


async def _topics(settings: Settings, flag_ids: set[str], result: RecordAudit) -> None:
    on_topic: Counter[str] = Counter(
        orjson.loads(record.value)["flag_id"]
        for record in await read_topic(settings.kafka_bootstrap, settings.topic_flags))
    result.topic_flags_missing = len(flag_ids - set(on_topic))
    result.topic_flags_unknown = len(set(on_topic) - flag_ids)
    result.topic_flag_doubles = sum(count - 1 for count in on_topic.values())
    for flag in sorted(flag_ids - set(on_topic)):
        result.note("flags", f"flag {flag} never reached {settings.topic_flags}")
    dead = await read_topic(settings.kafka_bootstrap, settings.topic_dlq)
    result.dead_letters = len(dead)
    for record in dead:
        result.note("settlements", f"dead letter: {orjson.loads(record.value)['error']}")
