"""A decided settlement as the record keeps it (records.schemas.SettlementRecord), built once
from the decision, or taken as the gate shipped it in its event."""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec

from service.claims.schemas import ClaimEffect, Effect
from service.claims.service import owner_token
from service.decisions.schemas import Answer, Decision, Settlement, Source
from service.flags.service import build_flag
from service.institutions.schemas import InstitutionRef
from service.kit.clock import epoch_seconds
from service.kit.keyed_hash import keyed_hex
from service.records.schemas import ClaimRow, PaidCode, RecordedLine, SettlementRecord
from service.settlements.events import GateEffects, SettlementEvent

_ENCODER = msgspec.json.Encoder()


class Candidate(msgspec.Struct, frozen=True, gc=False):
    """A settlement waiting for its decision, with what deciding it needs."""

    settlement: Settlement
    institution: InstitutionRef
    source: Source
    body_hash: bytes
    patient_ref: str | None
    detected_at: dt.datetime


def body_hash(settlement: Settlement) -> bytes:
    """The identity of a body: a replay must match it, a conflict will not. Over the typed
    fields (not the bytes as sent), so the same settlement in any key order or spacing, from
    the gate or from the topic, is the same body."""
    fields = (settlement.settlement_id, settlement.institution_id, settlement.settled_at,
              settlement.lines, settlement.patient_id)
    return hashlib.sha256(_ENCODER.encode(fields)).digest()


def patient_ref(key: str, patient_id: str | None) -> str | None:
    """Patients are stored and shown only as a keyed hash; the raw id goes nowhere."""
    return None if patient_id is None else keyed_hex(key, patient_id)


def decided(
    candidate: Candidate, decision: Decision, settled_at: dt.datetime
) -> SettlementRecord:
    """`settled_at`: the settlement's, read once by the caller."""
    settlement = candidate.settlement
    flags = [
        build_flag(draft, settlement_id=settlement.settlement_id,
                   institution_id=settlement.institution_id, settled_at=settled_at,
                   detected_at=candidate.detected_at, patient_ref=candidate.patient_ref)
        for draft in decision.flags
    ]
    outcome = decision.outcome
    answer = Answer(settlement.settlement_id, outcome, decision.enforced, False,
                    decision.lines, [flag.flag_id for flag in flags])
    return SettlementRecord(
        settlement.settlement_id, settlement.institution_id, settled_at,
        candidate.patient_ref, candidate.source, candidate.body_hash, decision.enforced,
        outcome, _ENCODER.encode(_recorded_lines(settlement, decision)),
        _ENCODER.encode(answer), decision.payments, _claim_rows(settlement, decision), flags,
    )


def _recorded_lines(settlement: Settlement, decision: Decision) -> list[RecordedLine]:
    paid: dict[int, list[PaidCode]] = {}
    for p in decision.payments:
        paid.setdefault(p.line_no, []).append((p.canonical, p.units, p.duplicate))
    return [
        RecordedLine(line.line_no, line.drug_code, line.quantity, line.split, line.pack_size,
                     line.trace_codes, line.no_code_reason, verdict.decision,
                     verdict.reasons, paid.get(line.line_no, []))
        for line, verdict in zip(settlement.lines, decision.lines, strict=True)
    ]


def _claim_rows(settlement: Settlement, decision: Decision) -> list[ClaimRow]:
    """What the record must claim: every code paid as a first payment, including those the
    first-seen set already credits to this line (a gate retrying its own settlement)."""
    pack_sizes = {c.canonical: c.new.pack_size for c in decision.changes if c.new is not None}
    lines = {line.line_no: line for line in settlement.lines}
    return [
        ClaimRow(p.canonical, p.line_no, p.units,
                 (pack_sizes.get(p.canonical) or lines[p.line_no].pack_size) if p.units else None)
        for p in decision.payments if not p.duplicate
    ]


def gate_effects(record: SettlementRecord) -> GateEffects:
    return GateEffects(record.body_hash.hex(), record.enforced, record.outcome,
                       msgspec.Raw(record.lines), record.payments, record.claims, record.flags)


def from_gate(event: SettlementEvent) -> SettlementRecord:
    """The gate's decision as the record keeps it, as it came (never judged again)."""
    effects, decision = event.effects, event.decision
    assert effects is not None
    return SettlementRecord(
        event.settlement_id, event.institution_id, event.settled_at_instant, event.patient_ref,
        Source.GATE, bytes.fromhex(effects.body_hash), effects.enforced, effects.outcome,
        bytes(effects.lines), bytes(decision), effects.payments, effects.claims, effects.flags,
    )


def claim_effects(record: SettlementRecord, institution_no: int) -> list[ClaimEffect]:
    """The record's claims as effects on the first-seen set (what the gate made there)."""
    paid_at = epoch_seconds(record.settled_at)
    return [
        ClaimEffect(Effect.SELL_UNITS if claim.units else Effect.CLAIM, claim.code,
                    owner_token(record.settlement_id, claim.line_no), institution_no, paid_at,
                    claim.units or 0, claim.pack_size or 0)
        for claim in record.claims
    ]
