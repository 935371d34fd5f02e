"""The expected flags of a workload, computed independently of service/ (plain first-seen
bookkeeping in production order, from CONTRACT §2-§5), so a benchmark can say whether the
system under test was right and not only fast.

Scope: the default policy (duplicate_policy reject, default go-live per kind, legacy_stock
unused), cn20 codes, stream-sourced settlements, whole-settlement reversals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GO_LIVE = {
    "retail_pharmacy": dt.date(2025, 4, 1), "primary": dt.date(2025, 5, 1),
    "secondary": dt.date(2025, 6, 1), "tertiary": dt.date(2025, 6, 1),
}
_SHANGHAI = dt.timezone(dt.timedelta(hours=8))
EXEMPT = {"herbal_pieces", "herbal_granules", "inpatient_split"}

FlagKey = tuple[str, str, int, str | None]  # kind, settlement_id, line_no, trace_code


class InstitutionLike(Protocol):
    @property
    def institution_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def go_live_override(self) -> dt.date | None: ...


@dataclass
class _Claim:
    institution_id: str
    owner: tuple[str, int] | None  # (settlement, line) holding a whole pack
    pack_size: int | None = None
    units: dict[tuple[str, int], int] = field(default_factory=dict)  # split sales by line

    @property
    def used(self) -> int:
        return sum(self.units.values())


# A code's history event: (type, settlement_id, line_no, duplicate), in processing order.
HistoryEvent = tuple[str, str, int, bool]


@dataclass
class Truth:
    flags: set[FlagKey]
    claims: int  # codes paid and held at the end (rows of code_claims)
    settlements: int
    # Every code's payments and reversals, and who holds each code at the end.
    histories: dict[str, list[HistoryEvent]] = field(default_factory=dict)
    holders: dict[str, tuple[str, int] | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"flags": len(self.flags), "claims": self.claims, "settlements": self.settlements}


@dataclass
class _Line:
    """What one line would do if paid."""

    errors: bool = False
    flags: list[FlagKey] = field(default_factory=list)
    claims: list[tuple[str, _Claim]] = field(default_factory=list)
    paid: list[tuple[str, bool]] = field(default_factory=list)  # (code, duplicate) if paid


@dataclass
class _Sim:
    go_live: dict[str, dt.datetime]
    claims: dict[str, _Claim] = field(default_factory=dict)
    paid_lines: dict[str, list[tuple[int, list[str]]]] = field(default_factory=dict)
    reversed: set[str] = field(default_factory=set)
    flags: set[FlagKey] = field(default_factory=set)
    histories: dict[str, list[HistoryEvent]] = field(default_factory=dict)

    def event(self, code: str, kind: str, sid: str, line_no: int, duplicate: bool) -> None:
        self.histories.setdefault(code, []).append((kind, sid, line_no, duplicate))


def simulate(institutions: Sequence[InstitutionLike], events: Iterable[dict[str, Any]]) -> Truth:
    sim = _Sim({i.institution_id: _go_live(i) for i in institutions})
    for body in events:
        if body["type"] == "reversal":
            _reverse(sim, body["settlement_id"], body["reversal_id"])
        elif body["settlement_id"] not in sim.paid_lines:  # a redelivery changes nothing
            _settle(sim, body)
    holders = {code: claim.owner for code, claim in sim.claims.items()}
    return Truth(sim.flags, len(sim.claims), len(sim.paid_lines), sim.histories, holders)


def _go_live(institution: InstitutionLike) -> dt.datetime:
    day = institution.go_live_override or GO_LIVE[institution.kind]
    return dt.datetime.combine(day, dt.time(), _SHANGHAI)


def _settle(sim: _Sim, body: dict[str, Any]) -> None:
    sid, inst = body["settlement_id"], body["institution_id"]
    enforced = dt.datetime.fromisoformat(body["settled_at"]) >= sim.go_live[inst]
    seen: set[str] = set()
    paid: list[tuple[int, list[str]]] = []
    for line in body["lines"]:
        work = _judge(sim, sid, inst, line, seen, enforced)
        sim.flags.update(work.flags)
        if not (enforced and work.errors):
            for code, claim in work.claims:
                sim.claims[code] = claim
            paid.append((line["line_no"], [code for code, _ in work.claims]))
            for code, duplicate in work.paid:
                sim.event(code, "payment", sid, line["line_no"], duplicate)
    sim.paid_lines[sid] = paid


def _judge(
    sim: _Sim, sid: str, inst: str, line: dict[str, Any], seen: set[str], enforced: bool
) -> _Line:
    work = _Line()
    codes: list[str] = line["trace_codes"]
    no = line["line_no"]
    if not codes and line.get("no_code_reason") not in EXEMPT:
        _refuse(work, ("missing_code", sid, no, None), enforced)
    for code in codes:
        if not _valid(code):
            _refuse(work, ("invalid_code", sid, no, code), enforced)
    if codes and not line["split"] and len(codes) != line["quantity"]:
        _refuse(work, ("quantity_mismatch", sid, no, None), enforced)
    for code in codes:
        if _valid(code):
            _one_code(sim, work, (sid, no), inst, line, code, seen)
    return work


def _valid(code: str) -> bool:
    return len(code) == 20 and code.isdigit() and code[0] == "8"


def _refuse(work: _Line, flag: FlagKey, enforced: bool) -> None:
    """Money already moved on the stream: a refusal is a claw-back flag once enforced."""
    work.errors = True
    if enforced:
        work.flags.append(flag)


def _one_code(
    sim: _Sim, work: _Line, owner: tuple[str, int], inst: str, line: dict[str, Any], code: str,
    seen: set[str],
) -> None:
    if code in seen:  # the same pack twice in one settlement: flagged, not paid twice
        _reuse(work, "duplicate_payment", owner, code, paid=False)
        return
    seen.add(code)
    claim = sim.claims.get(code)
    if line["split"]:
        _split(work, owner, inst, line, code, claim)
    elif claim is None:
        work.claims.append((code, _Claim(inst, owner)))
        work.paid.append((code, False))
    elif claim.owner is None:  # a whole sale of an opened pack
        kind = "split_overuse" if claim.institution_id == inst else "split_cross_institution"
        _reuse(work, kind, owner, code)
    elif claim.owner != owner:
        _reuse(work, "duplicate_payment", owner, code)


def _split(
    work: _Line, owner: tuple[str, int], inst: str, line: dict[str, Any], code: str,
    claim: _Claim | None,
) -> None:
    units: int = line["quantity"]
    if claim is not None and (claim.owner == owner or owner in claim.units):
        return
    if claim is not None and claim.owner is not None:
        _reuse(work, "duplicate_payment", owner, code)
        return
    if claim is not None and claim.institution_id != inst:
        _reuse(work, "split_cross_institution", owner, code)
        return
    pack_size = claim.pack_size if claim is not None and claim.pack_size else line["pack_size"]
    used = claim.used if claim is not None else 0
    if used + units > pack_size:
        _reuse(work, "split_overuse", owner, code)
        return
    opened = {**claim.units} if claim is not None else {}
    work.claims.append((code, _Claim(inst, None, pack_size, {**opened, owner: units})))
    work.paid.append((code, False))


def _reuse(
    work: _Line, kind: str, owner: tuple[str, int], code: str, *, paid: bool = True
) -> None:
    work.errors = True
    work.flags.append((kind, owner[0], owner[1], code))
    if paid:  # paid anyway only where nothing is enforced
        work.paid.append((code, True))


def _reverse(sim: _Sim, sid: str, reversal_id: str) -> None:
    """Give back what the settlement's paid lines hold; a replayed reversal gives nothing."""
    if reversal_id in sim.reversed or sid not in sim.paid_lines:
        return
    sim.reversed.add(reversal_id)
    for line_no, codes in sim.paid_lines[sid]:
        for code in codes:
            _release(sim, code, (sid, line_no))
            sim.event(code, "reversal", sid, line_no, False)


def _release(sim: _Sim, code: str, owner: tuple[str, int]) -> None:
    claim = sim.claims.get(code)
    if claim is None:
        return
    if claim.owner == owner:
        del sim.claims[code]
    elif owner in claim.units:
        claim.units.pop(owner)
        if not claim.units:
            del sim.claims[code]


# --- scoring a system's flags against the truth ---------------------------------------------

REUSE_KINDS = frozenset({"duplicate_payment", "split_overuse", "split_cross_institution"})
SoldCode = tuple[str, int, str]  # settlement_id, line_no, trace_code: where a code was sold
EVERY_FLAG = "every flag, by kind, settlement, line and code"
REUSE_ONLY = ("code re-use only (duplicate_payment, split_overuse, split_cross_institution), "
              "by settlement, line and code")


def reuse_flags(flags: Iterable[FlagKey]) -> set[SoldCode]:
    """The flags a code-level first-seen check can raise, without their kind (it cannot
    tell a duplicate from a split finding); refusals (missing, invalid, miscounted codes)
    are outside its scope."""
    return {(sid, line_no, code) for kind, sid, line_no, code in flags
            if kind in REUSE_KINDS and code is not None}


def score(found: Sequence[Any], expected: set[Any], scope: str) -> dict[str, Any]:
    """`found`: every flag raised, repeats included (an at-least-once system may raise one
    twice); `expected`: the truth's, in the same key."""
    got = set(found)
    return scored(scope, len(expected), len(found), len(got), len(expected - got),
                  len(got - expected))


def scored(scope: str, expected: int, found: int, distinct: int, missed: int,
           false: int) -> dict[str, Any]:
    """matched: raised and expected; missed: expected, never raised; false: raised, never
    expected; doubled: raised more than once (each repeat counted)."""
    return {"scope": scope, "expected": expected, "found": found, "matched": distinct - false,
            "missed": missed, "false": false, "doubled": found - distinct,
            "exact": missed == 0 and false == 0 and found == distinct}


def score_of_checks(checks: dict[str, Any]) -> dict[str, Any]:
    """The same fields from a stream run's checks (loadtest/stream.py)."""
    return scored(EVERY_FLAG, checks["expected"]["flags"], checks["flags_on_topic"],
                  checks["flags_distinct"], checks["missing_flags"], checks["unexpected_flags"])
