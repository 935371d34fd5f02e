"""Baseline (d)'s rules, pure: a batch decided in Kafka order over the claims PostgreSQL
holds, to the rows the record keeps. Written apart from service/decisions (the baseline
is an independent consumer), from CONTRACT §2-§5 as far as the workload needs them:
missing, invalid and miscounted codes (flagged once enforced), a code paid twice (in one
settlement or across settlements), split packs (units added up at the opening institution,
over-use, another institution's sale), a whole-pack sale of an opened pack, and whole-
settlement reversals that give the codes back.

Two passes: `check` (before PostgreSQL is asked: what needs no claim state, and the codes
to stage for the first-seen insert) and `decide` (with the claims the insert found)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.claims.schemas import FirstPayment
from service.decisions.schemas import Line
from service.flags.schemas import FlagDraft, FlagKind, FlagRecord
from service.flags.service import build_flag
from service.kit.keyed_hash import keyed_hex
from service.policy.schemas import PolicyConfig
from service.policy.service import exemption_accepted
from service.records.schemas import PaidCode, RecordedLine
from service.settlements.events import SettlementEvent
from service.tracecodes.schemas import ParsedTraceCode
from service.tracecodes.service import parse_trace_code

Owner = tuple[str, int]  # (settlement_id, line_no)
# A refusal that needs no claim state: (flag kind, the code it names).
Refusal = tuple[FlagKind, str | None]
_ENCODER = msgspec.json.Encoder()
_REASONS = {FlagKind.MISSING_CODE: "MISSING_TRACE_CODE", FlagKind.INVALID_CODE:
            "INVALID_TRACE_CODE", FlagKind.QUANTITY_MISMATCH: "QUANTITY_MISMATCH"}


class Claim(msgspec.Struct, frozen=True, gc=False):
    """A code_claims row: who paid a code first (a split pack: who opened it, and the units
    sold from it so far)."""

    settlement_id: str
    line_no: int
    institution_id: str
    paid_at: dt.datetime
    units_used: int | None = None
    pack_size: int | None = None

    @property
    def owner(self) -> Owner:
        return (self.settlement_id, self.line_no)

    @property
    def first_payment(self) -> FirstPayment:
        return FirstPayment(self.settlement_id, self.institution_id, self.paid_at)


@dataclass(slots=True)
class CheckedLine:
    line: Line
    codes: list[str]  # its valid codes, canonical, each the first of its settlement
    repeats: list[str]  # valid codes an earlier line of the settlement carried already
    refusals: list[Refusal]

    def payable(self, enforced: bool) -> bool:
        """Whether the line can be paid, as far as claims do not decide it."""
        return not (enforced and (self.refusals or self.repeats))

    def units(self) -> tuple[int | None, int | None]:
        """(units sold, pack size) for a split sale; (None, None) for whole packs."""
        line = self.line
        return (line.quantity, line.pack_size) if self.split else (None, None)

    @property
    def split(self) -> bool:
        """Sold by units from an opened pack (a split line without pack_size is miscounted,
        and its codes are judged as whole packs)."""
        return self.line.split and self.line.pack_size is not None


@dataclass(slots=True)
class Arrival:
    """A settlement new to the record, checked, waiting for its claims."""

    event: SettlementEvent
    body_hash: bytes
    settled_at: dt.datetime
    enforced: bool
    patient_ref: str | None
    lines: list[CheckedLine]


@dataclass(frozen=True, slots=True)
class Reversal:
    settlement_id: str
    reversal_id: str
    reversed_at: dt.datetime


def check(event: SettlementEvent, raw: bytes, enforced: bool, policy: PolicyConfig,
          patient_key: str) -> Arrival:
    settled_at = event.settled_at_instant
    seen: set[str] = set()
    lines = [_check_line(line, seen, settled_at, policy) for line in event.lines]
    patient_ref = None if event.patient_id is None else keyed_hex(patient_key, event.patient_id)
    return Arrival(event, hashlib.sha256(raw).digest(), settled_at, enforced, patient_ref,
                   lines)


def _check_line(line: Line, seen: set[str], settled_at: dt.datetime,
                policy: PolicyConfig) -> CheckedLine:
    checked = CheckedLine(line, [], [], [])
    reason = line.no_code_reason
    if not line.trace_codes and not (
            reason is not None and exemption_accepted(reason, settled_at, policy)):
        checked.refusals.append((FlagKind.MISSING_CODE, None))
    for text in line.trace_codes:
        parsed = parse_trace_code(text)
        if not isinstance(parsed, ParsedTraceCode):
            checked.refusals.append((FlagKind.INVALID_CODE, text))
        elif parsed.canonical in seen:
            checked.repeats.append(parsed.canonical)
        else:
            seen.add(parsed.canonical)
            checked.codes.append(parsed.canonical)
    count = len(line.trace_codes)
    miscounted = (count != 1 or line.pack_size is None) if line.split else count != line.quantity
    if count and miscounted:
        checked.refusals.append((FlagKind.QUANTITY_MISMATCH, None))
    return checked


def staged(items: list[Arrival | Reversal], held_codes: list[str]) -> list[tuple[Any, ...]]:
    """The staging rows in Kafka order: every valid code of every new settlement, `payable`
    where its line may claim it (the first-seen insert takes the first of each code), and the
    codes the batch's reversals give back (not payable: only their claims are wanted)."""
    rows: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, Reversal):
            continue
        sid, inst, at = item.event.settlement_id, item.event.institution_id, item.settled_at
        for checked in item.lines:
            payable = checked.payable(item.enforced)
            units, pack_size = checked.units()
            for code in checked.codes:
                rows.append((len(rows), code, sid, checked.line.line_no, inst, at, units,
                             pack_size, payable))
    rows += [(len(rows) + n, code, "", 0, "", None, None, None, False)
             for n, code in enumerate(held_codes)]
    return rows


def inserted_claim(row: tuple[Any, ...]) -> Claim:
    """The claim the first-seen insert wrote from a staging row."""
    _, _, sid, line_no, inst, at, units, pack_size, _ = row
    return Claim(sid, line_no, inst, at, units, pack_size)


@dataclass
class Outcome:
    """What the batch writes, in the record tables' column order."""

    settlements: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    flags: list[FlagRecord] = field(default_factory=list)
    reversals: list[tuple[Any, ...]] = field(default_factory=list)
    payments: Counter[str] = field(default_factory=Counter)
    # every code the batch's rules touched, as it must end (None: not claimed)
    claims: dict[str, Claim | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A settlement the reversals of this batch may name: its institution, patient and the
    codes each of its lines paid."""

    institution_id: str
    patient_ref: str | None
    lines: list[RecordedLine]


def decide(items: list[Arrival | Reversal], before: dict[str, Claim],
           targets: dict[str, Recorded], now: dt.datetime) -> Outcome:
    """Every item in order; `before`: the claims PostgreSQL held before the batch of every
    code that is not new; `targets`: recorded settlements the reversals name."""
    out = Outcome(claims=dict(before))
    known = dict(targets)
    for item in items:
        if isinstance(item, Reversal):
            _reverse(item, known, out)
        else:
            known[item.event.settlement_id] = _settle(item, out, now)
    return out


@dataclass(slots=True)
class _LineWork:
    reasons: list[dict[str, Any]] = field(default_factory=list)
    drafts: list[FlagDraft] = field(default_factory=list)
    changes: dict[str, Claim] = field(default_factory=dict)
    paid: list[PaidCode] = field(default_factory=list)


def _settle(arrival: Arrival, out: Outcome, now: dt.datetime) -> Recorded:
    event, enforced = arrival.event, arrival.enforced
    recorded: list[RecordedLine] = []
    drafts: list[FlagDraft] = []
    for checked in arrival.lines:
        fresh = _fresh_line(arrival, checked, out)
        if fresh is not None:
            recorded.append(fresh)
            continue
        work = _line(arrival, checked, out.claims)
        paid = not (enforced and work.reasons)
        drafts += work.drafts
        if paid:
            out.claims.update(work.changes)
            out.events += [(code, arrival.settled_at, "payment", event.settlement_id,
                            checked.line.line_no, event.institution_id, arrival.patient_ref,
                            units, duplicate, None) for code, units, duplicate in work.paid]
            out.payments[event.institution_id] += len(work.paid)
        recorded.append(_recorded(checked.line, paid, work))
    flags = [build_flag(d, settlement_id=event.settlement_id,
                        institution_id=event.institution_id, settled_at=arrival.settled_at,
                        detected_at=now, patient_ref=arrival.patient_ref) for d in drafts]
    out.flags += flags
    out.settlements.append(_settlement_row(arrival, recorded, [f.flag_id for f in flags]))
    return Recorded(event.institution_id, arrival.patient_ref, recorded)


_NO_REASONS: list[dict[str, Any]] = []  # shared by every line paid without a word


def _fresh_line(arrival: Arrival, checked: CheckedLine, out: Outcome) -> RecordedLine | None:
    """Nearly every line: whole packs, every code valid and never paid. Paid and claimed as
    the general rules below would; None, having changed nothing, for any other line."""
    claims, codes = out.claims, checked.codes
    if checked.refusals or checked.repeats or checked.split:
        return None
    for code in codes:
        if claims.get(code) is not None:
            return None
    event, line = arrival.event, checked.line
    sid, inst, at, line_no = event.settlement_id, event.institution_id, arrival.settled_at, \
        line.line_no
    claim = Claim(sid, line_no, inst, at)  # immutable: one for every code of the line
    paid: list[PaidCode] = []
    for code in codes:
        claims[code] = claim
        paid.append((code, None, False))
        out.events.append((code, at, "payment", sid, line_no, inst, arrival.patient_ref, None,
                           False, None))
    out.payments[inst] += len(codes)
    return RecordedLine(line_no, line.drug_code, line.quantity, False, line.pack_size,
                        line.trace_codes, line.no_code_reason, "pay", _NO_REASONS, paid)


def _line(arrival: Arrival, checked: CheckedLine, claims: dict[str, Claim | None]) -> _LineWork:
    work = _LineWork()
    line_no, severity = checked.line.line_no, "error" if arrival.enforced else "warning"
    for kind, text in checked.refusals:
        work.reasons.append({"code": _REASONS[kind], "severity": severity, "trace_code": text})
        if arrival.enforced:  # money already moved: a claw-back flag once enforced
            work.drafts.append(FlagDraft(kind, "low", line_no, text))
    for code in checked.repeats:  # the same pack twice in one settlement
        work.reasons.append({"code": "DUPLICATE_IN_SETTLEMENT", "severity": severity,
                             "trace_code": code})
        work.drafts.append(FlagDraft(FlagKind.DUPLICATE_PAYMENT, "medium", line_no, code))
    owner = (arrival.event.settlement_id, line_no)
    for code in checked.codes:
        state = claims.get(code)
        if checked.split:
            _split_code(arrival, checked, owner, code, state, work)
        else:
            _whole_code(arrival, owner, code, state, work)
    return work


def _whole_code(arrival: Arrival, owner: Owner, code: str, state: Claim | None,
                work: _LineWork) -> None:
    inst = arrival.event.institution_id
    if state is None:
        work.changes[code] = Claim(owner[0], owner[1], inst, arrival.settled_at)
    elif state.units_used is not None:  # an opened pack sold whole
        same = state.institution_id == inst
        _reuse(arrival, owner, code, state, work,
               FlagKind.SPLIT_OVERUSE if same else FlagKind.SPLIT_CROSS_INSTITUTION, None)
        return
    elif state.owner != owner:
        _reuse(arrival, owner, code, state, work, FlagKind.DUPLICATE_PAYMENT, None)
        return
    work.paid.append((code, None, False))


def _split_code(arrival: Arrival, checked: CheckedLine, owner: Owner, code: str,
                state: Claim | None, work: _LineWork) -> None:
    units, pack_size = checked.line.quantity, checked.line.pack_size
    assert pack_size is not None  # checked.split
    inst = arrival.event.institution_id
    if state is not None and state.units_used is None:  # a whole-paid pack
        _reuse(arrival, owner, code, state, work, FlagKind.DUPLICATE_PAYMENT, units)
        return
    if state is not None and state.institution_id != inst:
        _reuse(arrival, owner, code, state, work, FlagKind.SPLIT_CROSS_INSTITUTION, units)
        return
    used = (state.units_used or 0) if state is not None else 0
    size = (state.pack_size or pack_size) if state is not None else pack_size
    if used + units > size:
        _reuse(arrival, owner, code, state, work, FlagKind.SPLIT_OVERUSE, units)
        return
    opener = state if state is not None else Claim(owner[0], owner[1], inst, arrival.settled_at)
    work.changes[code] = msgspec.structs.replace(opener, units_used=used + units, pack_size=size)
    work.paid.append((code, units, False))


def _reuse(arrival: Arrival, owner: Owner, code: str, state: Claim | None, work: _LineWork,
           kind: FlagKind, units: int | None) -> None:
    """A code paid before: a reason and a flag whether the line is paid or not; paid anyway
    (before go-live), the payment is a duplicate."""
    work.reasons.append({"code": kind.value.upper(), "severity":
                         "error" if arrival.enforced else "warning", "trace_code": code})
    work.drafts.append(FlagDraft(kind, _severity(kind, state, arrival), owner[1], code,
                                 None if state is None else state.first_payment))
    work.paid.append((code, units, True))


def _severity(kind: FlagKind, state: Claim | None, arrival: Arrival) -> str:
    """CONTRACT §5: across institutions `high`, at the same one `medium`."""
    if kind is FlagKind.SPLIT_OVERUSE:
        return "medium"
    if kind is FlagKind.SPLIT_CROSS_INSTITUTION:
        return "high"
    same = state is not None and state.institution_id == arrival.event.institution_id
    return "medium" if same else "high"


def _recorded(line: Line, paid: bool, work: _LineWork) -> RecordedLine:
    return RecordedLine(line.line_no, line.drug_code, line.quantity, line.split,
                        line.pack_size, line.trace_codes, line.no_code_reason,
                        "pay" if paid else "reject", work.reasons, work.paid if paid else [])


def _settlement_row(arrival: Arrival, lines: list[RecordedLine],
                    flag_ids: list[str]) -> tuple[Any, ...]:
    event = arrival.event
    paid = [line.decision for line in lines].count("pay")
    decision = "pay" if paid == len(lines) else "reject" if paid == 0 else "partial"
    answer = {"settlement_id": event.settlement_id, "decision": decision,
              "enforced": arrival.enforced, "replayed": False,
              "lines": [{"line_no": line.line_no, "decision": line.decision,
                         "reasons": line.reasons} for line in lines], "flags": flag_ids}
    return (event.settlement_id, event.institution_id, arrival.settled_at, arrival.patient_ref,
            "stream", arrival.body_hash, decision, arrival.enforced, _ENCODER.encode(lines),
            _ENCODER.encode(answer))


def _reverse(reversal: Reversal, known: dict[str, Recorded], out: Outcome) -> None:
    """A whole settlement given back: each code its paid lines claimed is released (a split
    sale's units come back to the pack); a reversal of an unknown settlement records nothing."""
    target = known.get(reversal.settlement_id)
    if target is None:
        return
    released: list[str] = []
    for line in target.lines:
        for code, units, duplicate in line.paid_codes:
            if duplicate:
                continue
            _release(out.claims, code, (reversal.settlement_id, line.line_no), units)
            released.append(code)
            out.events.append((code, reversal.reversed_at, "reversal", reversal.settlement_id,
                               line.line_no, target.institution_id, target.patient_ref, units,
                               False, reversal.reversal_id))
    answer = {"settlement_id": reversal.settlement_id, "reversal_id": reversal.reversal_id,
              "released": released, "replayed": False}
    out.reversals.append((reversal.reversal_id, reversal.settlement_id, reversal.reversed_at,
                          _ENCODER.encode(answer)))


def _release(claims: dict[str, Claim | None], code: str, owner: Owner, units: int | None) -> None:
    state = claims.get(code)
    if state is None:
        return
    if units is None:
        if state.owner == owner and state.units_used is None:
            claims[code] = None
        return
    left = (state.units_used or 0) - units
    claims[code] = None if left <= 0 else msgspec.structs.replace(state, units_used=left)


def paid_codes(lines: list[RecordedLine]) -> list[str]:
    """The codes a recorded settlement's lines hold (what its reversal gives back)."""
    return [code for line in lines for code, _, duplicate in line.paid_codes if not duplicate]
