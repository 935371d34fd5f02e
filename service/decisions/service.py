"""Deciding settlements against the live first-seen set: the one path the gate (a batch of one)
and the consumers (a batch of many) share.

Per batch: one Redis round trip reads every code, one PostgreSQL query fetches first-payment
details the store does not hold, the pure core decides each settlement in order (later ones
see the claims of earlier ones), and one Redis round trip applies every claim as a
compare-and-set. If another gate or consumer changed a code in between, the batch's changes
are rolled back and the batch is decided again on fresh state."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from service.decisions.core import DecisionContext, decide
from service.decisions.schemas import (
    ClaimChange,
    CodeState,
    Decision,
    FirstPayment,
    SettlementIn,
    SettlementLineIn,
    Source,
)
from service.firstseen.store import FirstSeenStore, Seen
from service.flags.service import build_flag
from service.institutions.schemas import InstitutionRef
from service.institutions.service import to_policy
from service.kit.errors import Unavailable
from service.policy.schemas import PolicyConfig
from service.policy.service import is_enforced
from service.records import repository as records_repository
from service.records.schemas import ClaimRow, SettlementRecord
from service.tracecodes.schemas import ParsedTraceCode
from service.tracecodes.service import parse_trace_code

MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Candidate:
    """A settlement waiting for its decision, with what deciding it needs."""

    settlement: SettlementIn
    institution: InstitutionRef
    source: Source
    body_hash: bytes
    patient_ref: str | None
    detected_at: dt.datetime


class ClaimContention(Unavailable):
    code = "CLAIM_CONTENTION"


def body_hash(settlement: SettlementIn) -> bytes:
    """The identity of a request body: a replay must match it, a conflict will not."""
    canonical = orjson.dumps(settlement.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).digest()


@dataclass(frozen=True, slots=True)
class Decided:
    record: SettlementRecord
    changes: list[ClaimChange]  # what it changed in the first-seen set (to undo if need be)


async def decide_and_claim(
    candidates: Sequence[Candidate], store: FirstSeenStore, session: AsyncSession,
    policy: PolicyConfig,
) -> list[Decided]:
    """Decide and claim; settlements that lost a race (and later ones that read the codes
    they touched) are undone and decided again, the rest keep their claims: a claim that
    others may already have seen is never taken back for someone else's lost race."""
    done: dict[int, Decided] = {}
    for _ in range(MAX_ATTEMPTS):
        todo = [i for i in range(len(candidates)) if i not in done]
        if not todo:
            return [done[i] for i in range(len(candidates))]
        batch = [candidates[i] for i in todo]
        decisions = await _decide_all(batch, store, session, policy)
        kept = await _apply(store, batch, [d for d, _ in decisions],
                            {code: fp for _, fresh in decisions for code, fp in fresh.items()})
        for position in kept:
            decision = decisions[position][0]
            done[todo[position]] = Decided(_record(batch[position], decision), decision.changes)
    raise ClaimContention("trace codes are being settled concurrently; retry", retry_after_s=1)


async def _apply(
    store: FirstSeenStore, batch: Sequence[Candidate], decisions: Sequence[Decision],
    details: dict[str, FirstPayment],
) -> set[int]:
    """Apply every change; undo the settlements that must be decided again. Returns the
    positions (in `batch`) whose claims stand."""
    changes = [(p, c) for p, d in enumerate(decisions) for c in d.changes]
    landed = await store.apply([c for _, c in changes], details)
    failed = {p for (p, _), ok in zip(changes, landed, strict=True) if not ok}
    redo = _tainted(batch, failed)
    undo = [c for (p, c), ok in zip(changes, landed, strict=True) if ok and p in redo]
    if undo:
        await store.apply([c.undone() for c in undo], {})
    return set(range(len(batch))) - redo


def _tainted(batch: Sequence[Candidate], failed: set[int]) -> set[int]:
    """The failed settlements and every later one that read a code they touched (its
    decision assumed their claims)."""
    redo: set[int] = set()
    touched: set[str] = set()
    for position, candidate in enumerate(batch):
        codes = set(_codes(candidate.settlement))
        if position in failed or codes & touched:
            redo.add(position)
            touched |= codes
    return redo


async def release(store: FirstSeenStore, changes: Sequence[ClaimChange]) -> None:
    """Give back claims whose settlement could not be sent on to the record."""
    await store.apply([change.undone() for change in changes], {})


async def _decide_all(
    candidates: Sequence[Candidate], store: FirstSeenStore, session: AsyncSession,
    policy: PolicyConfig,
) -> list[tuple[Decision, dict[str, FirstPayment]]]:
    seen = await store.read(code for c in candidates for code in _codes(c.settlement))
    states = {code: s.state for code, s in seen.items() if s.state is not None}
    first_payments = await _first_payments(session, seen)
    decided = []
    for candidate in candidates:
        decision = decide(candidate.settlement, _context(candidate, policy, states,
                                                          first_payments))
        fresh = _apply_overlay(candidate, decision, states, first_payments)
        decided.append((decision, fresh))
    return decided


def _codes(settlement: SettlementIn) -> list[str]:
    parsed = (parse_trace_code(text) for line in settlement.lines for text in line.trace_codes)
    return [code.canonical for code in parsed if isinstance(code, ParsedTraceCode)]


async def _first_payments(session: AsyncSession, seen: dict[str, Seen]) -> dict[str, FirstPayment]:
    """Details of each paid code: from Redis while the record lacks them, else the record."""
    found = {code: s.pending for code, s in seen.items() if s.pending is not None}
    missing = [code for code, s in seen.items() if s.state is not None and s.pending is None]
    if missing:
        found.update(await records_repository.first_payments(session, missing))
    return found


def _context(
    candidate: Candidate, policy: PolicyConfig, states: dict[str, CodeState],
    first_payments: dict[str, FirstPayment],
) -> DecisionContext:
    settled_at = candidate.settlement.settled_at_instant
    institution = to_policy(candidate.institution)
    return DecisionContext(
        source=candidate.source, enforced=is_enforced(institution, settled_at, policy),
        institution_no=candidate.institution.number,
        institution_id=candidate.institution.institution_id, settled_at=settled_at,
        policy=policy, states=states, first_payments=first_payments,
    )


def _apply_overlay(
    candidate: Candidate, decision: Decision, states: dict[str, CodeState],
    first_payments: dict[str, FirstPayment],
) -> dict[str, FirstPayment]:
    """Later settlements of the batch see this one's claims as if already stored."""
    fresh: dict[str, FirstPayment] = {}
    for change in decision.changes:
        if change.new is not None:
            states[change.canonical] = change.new
        if change.expected is None:
            fresh[change.canonical] = FirstPayment(
                candidate.settlement.settlement_id, candidate.institution.institution_id,
                candidate.settlement.settled_at_instant,
            )
    first_payments.update(fresh)
    return fresh


def _record(candidate: Candidate, decision: Decision) -> SettlementRecord:
    settlement = candidate.settlement
    settled_at = settlement.settled_at_instant
    flags = [
        build_flag(draft, settlement_id=settlement.settlement_id,
                   institution_id=settlement.institution_id, settled_at=settled_at,
                   detected_at=candidate.detected_at, patient_ref=candidate.patient_ref)
        for draft in decision.flags
    ]
    verdicts = [line.to_json() for line in decision.lines]  # the answer's and the record's
    lines = _line_records(settlement, decision, verdicts)
    return SettlementRecord(
        settlement_id=settlement.settlement_id, institution_id=settlement.institution_id,
        settled_at=settled_at, patient_ref=candidate.patient_ref,
        source=candidate.source.value, body_hash=candidate.body_hash,
        enforced=decision.enforced, lines=lines, answer=answer_json(decision, verdicts, flags),
        payments=decision.payments, claims=_claim_rows(settlement, decision),
        flags=flags,
    )


def answer_json(
    decision: Decision, verdicts: list[dict[str, Any]], flags: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "settlement_id": decision.settlement_id,
        "decision": decision.outcome,
        "enforced": decision.enforced,
        "replayed": False,
        "lines": verdicts,
        "flags": [flag["flag_id"] for flag in flags],
    }


def _line_records(
    settlement: SettlementIn, decision: Decision, verdicts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each line as sent, with its verdict and the codes it paid (what a reversal gives back)."""
    by_line = {verdict["line_no"]: verdict for verdict in verdicts}
    paid: dict[int, list[list[Any]]] = {}
    for p in decision.payments:
        paid.setdefault(p.line_no, []).append([p.canonical, p.units, p.duplicate])
    return [
        {**_line_json(line), **by_line[line.line_no], "paid_codes": paid.get(line.line_no, [])}
        for line in settlement.lines
    ]


def _line_json(line: SettlementLineIn) -> dict[str, Any]:
    # By hand: model_dump costs more than the rest of deciding the line.
    return {
        "line_no": line.line_no, "drug_code": line.drug_code, "quantity": line.quantity,
        "split": line.split, "pack_size": line.pack_size, "trace_codes": line.trace_codes,
        "no_code_reason": line.no_code_reason.value if line.no_code_reason else None,
    }


def _claim_rows(settlement: SettlementIn, decision: Decision) -> list[ClaimRow]:
    """What the record must claim: every code paid as a first payment, including those the
    first-seen set already credits to this line (a batch retried after its transaction
    failed finds its own claims there, and must still write them to the record)."""
    pack_sizes = {c.canonical: c.new.pack_size for c in decision.changes if c.new is not None}
    lines = {line.line_no: line for line in settlement.lines}
    return [
        ClaimRow(p.canonical, p.line_no, p.units,
                 (pack_sizes.get(p.canonical) or lines[p.line_no].pack_size) if p.units else None)
        for p in decision.payments if not p.duplicate
    ]
