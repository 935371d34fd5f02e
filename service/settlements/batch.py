"""A batch of the settlements topic decided in memory, in Kafka order, as one unit: pure, no
I/O (stream.py reads what it needs first and writes what comes out).

Each settlement is decided against the first-seen set as the batch found it plus what the
batch's earlier events did to it (the overlay), so a pack paid, reversed and paid again in one
batch is judged in the order it happened. What comes out: the records to write, the claims
netted for `code_claims`, and the effects to apply to Redis once the record is committed, in
order (each idempotent, so a batch redelivered after a crash may apply them again)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from service.claims.schemas import ClaimEffect, CodeState, Effect, FirstPayment, Payment
from service.claims.service import apply_effect, plan_release
from service.decisions.core import DecisionContext, decide
from service.decisions.schemas import Decision, Source
from service.institutions.schemas import InstitutionRef
from service.institutions.service import to_policy
from service.policy.schemas import PolicyConfig
from service.policy.service import go_live_instant, parse_settled_at
from service.records.ledger import ClaimInsert, ClaimLedger, SplitDelta
from service.records.schemas import ReversalRecord, SettlementRecord
from service.settlements import recording
from service.settlements.events import (
    DeadLetter,
    Incoming,
    ReversalEvent,
    SettlementEvent,
    TopicEvent,
)
from service.settlements.recording import Candidate

_ENCODER = msgspec.json.Encoder()


class Target(msgspec.Struct, gc=False):
    """A settlement as a reversal needs it: recorded before the batch, or earlier in it."""

    settlement_id: str
    institution_id: str
    patient_ref: str | None
    settled_at: dt.datetime
    lines: set[int]
    payments: list[Payment]  # only paid lines have payments: nothing else can be given back
    reversed: set[int]  # lines reversed already


class Known(msgspec.Struct, gc=False):
    """What the batch is decided against: read from Redis and PostgreSQL before it."""

    institutions: Mapping[str, InstitutionRef]
    states: dict[str, CodeState]  # the overlay: starts as Redis had it
    details: dict[str, FirstPayment]  # first payments of the codes paid already
    targets: dict[str, Target]  # settlements the batch's reversals name, recorded before it
    voided: set[tuple[str, str]]  # (settlement_id, attempt) the gate answered 503 for
    policy: PolicyConfig
    patient_key: str
    detected_at: dt.datetime
    go_live: dict[str, dt.datetime] = {}  # by institution, filled as the batch meets them


class BatchOutcome(msgspec.Struct, gc=False):
    settlements: list[SettlementRecord] = []
    reversals: list[ReversalRecord] = []
    effects: list[ClaimEffect] = []
    forget: list[str] = []  # codes whose pending details the record is about to hold
    claims: ClaimLedger = msgspec.field(default_factory=ClaimLedger)
    dead: list[DeadLetter] = []
    voided: int = 0


def decide_batch(
    events: list[tuple[Incoming, TopicEvent]], known: Known, out: BatchOutcome | None = None
) -> BatchOutcome:
    """`events` are new (not recorded yet), in Kafka order, one copy each. A batch may be
    decided a slice at a time into one `out`: `known` carries what the slices before did."""
    out = BatchOutcome() if out is None else out
    for record, event in events:
        if isinstance(event, ReversalEvent):
            _reverse(record, event, known, out)
        elif event.from_gate:
            _take_gate(event, known, out)
        else:
            _decide_stream(event, known, out)
    return out


def _decide_stream(event: SettlementEvent, known: Known, out: BatchOutcome) -> None:
    institution = known.institutions[event.institution_id]
    settled_at = parse_settled_at(event.settled_at)
    ref = recording.patient_ref(known.patient_key, event.patient_id)
    candidate = Candidate(event, institution, Source.STREAM, recording.body_hash(event), ref,
                          known.detected_at)
    decision = decide(event, _context(settled_at, institution, known))
    record = recording.decided(candidate, decision, settled_at)
    _overlay_decision(event, settled_at, decision, known, out)
    _settled(record, [line.line_no for line in event.lines], known, out)


def _context(
    settled_at: dt.datetime, institution: InstitutionRef, known: Known
) -> DecisionContext:
    return DecisionContext(
        Source.STREAM, settled_at >= _go_live(institution, known), institution.number,
        institution.institution_id, settled_at, known.policy, known.states, known.details,
    )


def _go_live(institution: InstitutionRef, known: Known) -> dt.datetime:
    """Each institution's go-live instant, worked out once a batch (policy.is_enforced is
    `settled_at >= this`)."""
    found = known.go_live.get(institution.institution_id)
    if found is None:
        found = known.go_live[institution.institution_id] = go_live_instant(
            to_policy(institution), known.policy)
    return found


def _overlay_decision(
    event: SettlementEvent, settled_at: dt.datetime, decision: Decision, known: Known,
    out: BatchOutcome,
) -> None:
    """Later events of the batch see this settlement's claims as if stored already."""
    first = FirstPayment(event.settlement_id, event.institution_id, settled_at)
    states, details, effects = known.states, known.details, out.effects
    for change in decision.changes:
        code, new = change.canonical, change.new
        if new is None:
            states.pop(code, None)
        else:
            states[code] = new
        if change.expected is None:
            details[code] = first
        effects.append(change.effect())


def _take_gate(event: SettlementEvent, known: Known, out: BatchOutcome) -> None:
    """The gate decided it and made its claims in Redis already; they go into the overlay
    (and into Redis again only where it lacks them: it was rebuilt since). The gate answered
    503 for a voided attempt, so that settlement is not recorded."""
    if (event.settlement_id, event.attempt or "") in known.voided:
        out.voided += 1
        return
    record = recording.from_gate(event)
    institution = known.institutions[event.institution_id]
    first = FirstPayment(record.settlement_id, record.institution_id, record.settled_at)
    for effect in recording.claim_effects(record, institution.number):
        if _overlay(effect, known, out) and effect.kind is Effect.CLAIM:
            known.details.setdefault(effect.canonical, first)
        out.forget.append(effect.canonical)
    _settled(record, [line.line_no for line in event.lines], known, out)


def _overlay(effect: ClaimEffect, known: Known, out: BatchOutcome) -> bool:
    """Apply an effect to the overlay; queue it for Redis if it changed anything there."""
    before = known.states.get(effect.canonical)
    after = apply_effect(before, effect)
    if after == before:
        return False
    if after is None:
        known.states.pop(effect.canonical, None)
    else:
        known.states[effect.canonical] = after
    out.effects.append(effect)
    return True


def _settled(
    record: SettlementRecord, line_nos: list[int], known: Known, out: BatchOutcome
) -> None:
    """Recorded by this batch: a later reversal in it finds it here."""
    out.settlements.append(record)
    known.targets[record.settlement_id] = Target(
        record.settlement_id, record.institution_id, record.patient_ref, record.settled_at,
        set(line_nos), record.payments, set())
    ledger, sid, iid, at = out.claims, record.settlement_id, record.institution_id, \
        record.settled_at
    for claim in record.claims:
        if claim.units is None:
            ledger.claim(ClaimInsert(claim.code, sid, claim.line_no, iid, at))
        else:
            out.claims.add_units(SplitDelta(claim.code, record.settlement_id, claim.line_no,
                                            record.institution_id, record.settled_at,
                                            claim.units, claim.pack_size))


def _reverse(record: Incoming, event: ReversalEvent, known: Known, out: BatchOutcome) -> None:
    target = known.targets.get(event.settlement_id)
    if target is None:
        out.dead.append(DeadLetter(record, f"reversal {event.reversal_id} names unknown "
                                           f"settlement {event.settlement_id}"))
        return
    unknown = set(event.line_nos or ()) - target.lines
    if unknown and not event.from_gate:
        out.dead.append(DeadLetter(record, f"settlement {target.settlement_id} has no line "
                                           f"{sorted(unknown)}"))
        return
    if event.effects is not None and event.from_gate:
        released, answer = event.effects.released, bytes(event.effects.answer)
        lines = {line_no for _, line_no, _ in released}
    else:
        lines = _lines_to_reverse(target, event.line_nos)
        released = _released(target, lines)
        answer = _ENCODER.encode(reversal_answer(target.settlement_id, event.reversal_id,
                                                 [code for code, _, _ in released]))
    _release(target, lines, released, known, out)
    at = _reversed_at(record, event)
    out.reversals.append(ReversalRecord(event.reversal_id, target.settlement_id,
                                        target.institution_id, target.patient_ref,
                                        event.line_nos, at, released, answer))
    target.reversed |= lines


def _lines_to_reverse(target: Target, requested: list[int] | None) -> set[int]:
    """Requested lines not reversed yet (only paid lines paid codes to give back)."""
    wanted = target.lines if requested is None else set(requested)
    return wanted - target.reversed


def _released(target: Target, lines: set[int]) -> list[tuple[str, int, int | None]]:
    """[code, line_no, units] reversing these lines gives back: every code they paid as a
    first payment (the record releases a claim only where the line holds it)."""
    return [(p.canonical, p.line_no, p.units) for p in target.payments
            if p.line_no in lines and not p.duplicate]


def _release(
    target: Target, lines: set[int], released: list[tuple[str, int, int | None]],
    known: Known, out: BatchOutcome,
) -> None:
    """In the overlay (and so in Redis) what the lines hold; in the record what they paid. A
    gate reversal released in Redis already: this changes nothing there unless Redis was
    rebuilt since and put the claims back."""
    for change in plan_release(target.settlement_id, target.payments, lines, known.states):
        _overlay(change.effect(), known, out)
    for code, line_no, units in released:
        if units is None:
            out.claims.release(code, target.settlement_id)
        else:
            out.claims.add_units(SplitDelta(code, target.settlement_id, line_no,
                                            target.institution_id, target.settled_at, -units,
                                            None))


def _reversed_at(record: Incoming, event: ReversalEvent) -> dt.datetime:
    """The gate's time, or for a stream event the Kafka timestamp: both are the same on
    every redelivery, so the history row is written once."""
    if event.reversed_at:
        return parse_settled_at(event.reversed_at)
    return dt.datetime.fromtimestamp(record.timestamp_ms / 1000, dt.UTC)


def reversal_answer(settlement_id: str, reversal_id: str, released: list[str]) -> dict[str, object]:
    return {"settlement_id": settlement_id, "reversal_id": reversal_id, "released": released,
            "replayed": False}

