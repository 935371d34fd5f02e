"""The decision core: one pure function decides every line of a settlement from the settlement,
the policy and the first-seen state of its codes. The gate and the consumers both call it; it
does no I/O, so it is tested exhaustively without servers.

Choices where the contract is silent (recorded in the issue notes):
- A whole-pack sale of an opened split pack is SPLIT_OVERUSE at the opening institution and
  SPLIT_CROSS_INSTITUTION elsewhere; a split sale of a whole-paid pack is DUPLICATE_PAYMENT.
- `duplicate_policy: flag` softens DUPLICATE_PAYMENT only; split findings still reject.
- DUPLICATE_IN_SETTLEMENT is a reason at the gate (a double scan, nothing paid) and a
  duplicate_payment flag on the stream (the money already moved twice).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from service.claims.schemas import ClaimChange, CodeState, FirstPayment, Payment
from service.claims.service import owner_token
from service.decisions.schemas import (
    Decision,
    Line,
    LineVerdict,
    Reason,
    ReasonCode,
    Settlement,
    Severity,
    Source,
)
from service.flags.schemas import FlagDraft, FlagKind
from service.kit.clock import epoch_seconds
from service.policy.schemas import PolicyConfig
from service.policy.service import exemption_accepted
from service.settings import DuplicatePolicy
from service.tracecodes.schemas import InvalidTraceCode, ParsedTraceCode
from service.tracecodes.service import parse_trace_code

REUSE_FLAGS = {
    ReasonCode.DUPLICATE_PAYMENT: FlagKind.DUPLICATE_PAYMENT,
    ReasonCode.SPLIT_OVERUSE: FlagKind.SPLIT_OVERUSE,
    ReasonCode.SPLIT_CROSS_INSTITUTION: FlagKind.SPLIT_CROSS_INSTITUTION,
}
# Findings the gate refuses; on the stream (money already moved) they become claw-back flags.
REFUSAL_FLAGS = {
    ReasonCode.MISSING_TRACE_CODE: FlagKind.MISSING_CODE,
    ReasonCode.INVALID_TRACE_CODE: FlagKind.INVALID_CODE,
    ReasonCode.QUANTITY_MISMATCH: FlagKind.QUANTITY_MISMATCH,
}


class DecisionContext(msgspec.Struct, frozen=True, gc=False):
    source: Source
    enforced: bool
    institution_no: int
    institution_id: str
    settled_at: dt.datetime
    policy: PolicyConfig
    states: Mapping[str, CodeState]  # canonical code -> state; absent = never paid
    first_payments: Mapping[str, FirstPayment] = {}
    paid_at: int = -1  # settled_at in epoch seconds; worked out if not given

    def __post_init__(self) -> None:
        if self.paid_at < 0:
            msgspec.structs.force_setattr(self, "paid_at", epoch_seconds(self.settled_at))


def decide(settlement: Settlement, ctx: DecisionContext) -> Decision:
    decision = Decision(settlement.settlement_id, ctx.enforced, [], [], [], [])
    seen: set[str] = set()
    for line in settlement.lines:
        _decide_line(settlement, line, ctx, seen, decision)
    return decision


def canonical_codes(settlement: Settlement, into: list[str] | None = None) -> list[str]:
    """The valid codes of a settlement, canonical, in order (what the first-seen set is read
    for before deciding it), appended to `into` if given. Loops, not generators: this runs
    for every code of every batch, and a generator's frames cost more than the parse."""
    codes = [] if into is None else into
    for line in settlement.lines:
        for text in line.trace_codes:
            code = parse_trace_code(text)
            if isinstance(code, ParsedTraceCode):
                codes.append(code.canonical)
    return codes


class _LineWork(msgspec.Struct, gc=False):
    """What one line would do if paid, gathered before the verdict."""

    reasons: list[Reason]
    changes: list[ClaimChange]
    payments: list[Payment]
    flags: list[FlagDraft]


def _decide_line(
    settlement: Settlement, line: Line, ctx: DecisionContext, seen: set[str],
    decision: Decision,
) -> None:
    if not line.split and len(line.trace_codes) == line.quantity and _fresh_whole_line(
            settlement, line, ctx, seen, decision):
        return
    work = _LineWork([], [], [], [])
    parsed = [parse_trace_code(text) for text in line.trace_codes]
    if not parsed:
        _no_code(line, ctx, work)
    _invalid_codes(parsed, work)
    _quantity(line, parsed, work)
    token = owner_token(settlement.settlement_id, line.line_no)
    for code in parsed:
        if isinstance(code, ParsedTraceCode):
            _one_code(line, code, token, ctx, seen, work)
    _settle_line(line, ctx, work, decision)


_NO_REASONS: list[Reason] = []  # shared by every line paid without a word: never appended to


def _fresh_whole_line(
    settlement: Settlement, line: Line, ctx: DecisionContext, seen: set[str],
    decision: Decision,
) -> bool:
    """Nearly every line: whole packs, one valid code each, none paid before. Paid and
    claimed exactly as the general rules below would (tests compare the two); False, having
    changed nothing, for any other line."""
    codes: list[str] = []
    states = ctx.states
    for text in line.trace_codes:
        code = parse_trace_code(text)
        if not isinstance(code, ParsedTraceCode):
            return False
        canonical = code.canonical
        if canonical in seen or canonical in states or canonical in codes:
            return False
        codes.append(canonical)
    line_no = line.line_no
    token = owner_token(settlement.settlement_id, line_no)
    new = CodeState(token, ctx.institution_no, ctx.paid_at)
    seen.update(codes)
    changes, payments = decision.changes, decision.payments
    for canonical in codes:  # a loop, not two generators: this runs for nearly every code
        changes.append(ClaimChange(canonical, line_no, token, None, new))
        payments.append(Payment(canonical, line_no, None, False))
    decision.lines.append(LineVerdict(line_no, "pay", _NO_REASONS))
    return True


def _no_code(line: Line, ctx: DecisionContext, work: _LineWork) -> None:
    reason = line.no_code_reason
    if reason is not None and exemption_accepted(reason, ctx.settled_at, ctx.policy):
        work.reasons.append(Reason(ReasonCode.EXEMPT, Severity.INFO, message=reason.value))
        return
    message = "no trace code" if reason is None else f"exemption {reason.value} has expired"
    work.reasons.append(Reason(ReasonCode.MISSING_TRACE_CODE, Severity.ERROR, message=message))


def _invalid_codes(parsed: list[ParsedTraceCode | InvalidTraceCode], work: _LineWork) -> None:
    for code in parsed:
        if isinstance(code, InvalidTraceCode):
            work.reasons.append(
                Reason(ReasonCode.INVALID_TRACE_CODE, Severity.ERROR, code.text, code.reason)
            )


def _quantity(
    line: Line, parsed: list[ParsedTraceCode | InvalidTraceCode], work: _LineWork
) -> None:
    if not parsed:
        return
    if line.split and (len(parsed) != 1 or line.pack_size is None):
        message = "a split line needs exactly one trace code and pack_size"
    elif not line.split and len(parsed) != line.quantity:
        message = f"{len(parsed)} trace codes for {line.quantity} packs"
    else:
        return
    work.reasons.append(Reason(ReasonCode.QUANTITY_MISMATCH, Severity.ERROR, message=message))


def _one_code(
    line: Line, code: ParsedTraceCode, token: int, ctx: DecisionContext, seen: set[str],
    work: _LineWork,
) -> None:
    canonical = code.canonical
    if canonical in seen:
        work.reasons.append(Reason(ReasonCode.DUPLICATE_IN_SETTLEMENT, Severity.ERROR, canonical))
        if ctx.source is Source.STREAM:
            work.flags.append(FlagDraft(FlagKind.DUPLICATE_PAYMENT, "medium", line.line_no,
                                        canonical))
        return
    seen.add(canonical)
    state = ctx.states.get(canonical)
    if line.split and line.pack_size is not None:
        _split_code(line, canonical, token, state, ctx, work)
    else:
        _whole_code(line, canonical, token, state, ctx, work)


def _whole_code(
    line: Line, canonical: str, token: int, state: CodeState | None, ctx: DecisionContext,
    work: _LineWork,
) -> None:
    if state is None:
        new = CodeState(token, ctx.institution_no, ctx.paid_at)
        work.changes.append(ClaimChange(canonical, line.line_no, token, None, new))
    elif state.owner == token and not state.is_split:
        pass  # a replay of the line that holds the claim: paid again, changes nothing
    elif state.is_split:
        _reuse(line, canonical, state, ctx, work, _split_finding(state, ctx))
        return
    else:
        _reuse(line, canonical, state, ctx, work, ReasonCode.DUPLICATE_PAYMENT)
        return
    work.payments.append(Payment(canonical, line.line_no, None, False))


def _split_code(
    line: Line, canonical: str, token: int, state: CodeState | None, ctx: DecisionContext,
    work: _LineWork,
) -> None:
    assert line.pack_size is not None
    units = line.quantity
    if state is not None and token in (state.split_owners if state.is_split else (state.owner,)):
        work.payments.append(Payment(canonical, line.line_no, units, False))
        return
    if state is not None and not state.is_split:
        _reuse(line, canonical, state, ctx, work, ReasonCode.DUPLICATE_PAYMENT)
        return
    if state is not None and state.institution_no != ctx.institution_no:
        _reuse(line, canonical, state, ctx, work, ReasonCode.SPLIT_CROSS_INSTITUTION)
        return
    used = (state.units_used or 0) if state is not None else 0
    pack_size = state.pack_size if state is not None and state.pack_size else line.pack_size
    if used + units > pack_size:
        _reuse(line, canonical, state, ctx, work, ReasonCode.SPLIT_OVERUSE, pack_size - used)
        return
    new = _opened(state, token, ctx, used + units, pack_size)
    work.changes.append(ClaimChange(canonical, line.line_no, token, state, new, units))
    work.payments.append(Payment(canonical, line.line_no, units, False))


def _opened(
    state: CodeState | None, token: int, ctx: DecisionContext, used: int, pack_size: int
) -> CodeState:
    if state is None:
        return CodeState(token, ctx.institution_no, ctx.paid_at, used, pack_size, (token,))
    return msgspec.structs.replace(state, units_used=used,
                                   split_owners=(*state.split_owners, token))


def _split_finding(state: CodeState, ctx: DecisionContext) -> ReasonCode:
    if state.institution_no == ctx.institution_no:
        return ReasonCode.SPLIT_OVERUSE
    return ReasonCode.SPLIT_CROSS_INSTITUTION


def _reuse(
    line: Line, canonical: str, state: CodeState | None, ctx: DecisionContext,
    work: _LineWork, code: ReasonCode, units_left: int | None = None,
) -> None:
    """Code re-use: a reason on the line and a flag, whether the line is paid or not. The
    first payment keeps its claim; if the line is paid anyway the payment is a duplicate."""
    first = ctx.first_payments.get(canonical)
    message = f"{units_left} units left in the pack" if units_left is not None else None
    work.reasons.append(Reason(code, Severity.ERROR, canonical, message, first))
    work.flags.append(
        FlagDraft(REUSE_FLAGS[code], _reuse_severity(code, state, ctx), line.line_no,
                  canonical, first)
    )
    units = line.quantity if line.split else None
    work.payments.append(Payment(canonical, line.line_no, units, True))


def _reuse_severity(code: ReasonCode, state: CodeState | None, ctx: DecisionContext) -> str:
    if code is ReasonCode.SPLIT_OVERUSE:
        return "medium"
    if code is ReasonCode.SPLIT_CROSS_INSTITUTION:
        return "high"
    return duplicate_severity(state is not None and state.institution_no == ctx.institution_no)


def duplicate_severity(same_institution: bool) -> str:
    """CONTRACT §5: `high` across institutions, `medium` at the same one."""
    return "medium" if same_institution else "high"


def _settle_line(line: Line, ctx: DecisionContext, work: _LineWork, decision: Decision) -> None:
    reasons = [_soften(reason, ctx) for reason in work.reasons]
    paid = not any(reason.severity is Severity.ERROR for reason in reasons)
    decision.lines.append(LineVerdict(line.line_no, "pay" if paid else "reject", reasons))
    decision.flags.extend(work.flags)
    if ctx.source is Source.STREAM and ctx.enforced:
        decision.flags.extend(_refusal_flags(line, work.reasons))
    if paid:
        decision.changes.extend(work.changes)
        decision.payments.extend(work.payments)


def _soften(reason: Reason, ctx: DecisionContext) -> Reason:
    """Before go-live every finding is a warning; `duplicate_policy: flag` pays duplicates."""
    if reason.severity is not Severity.ERROR:
        return reason
    lenient = ctx.policy.duplicate_policy is DuplicatePolicy.FLAG
    if not ctx.enforced or (lenient and reason.code is ReasonCode.DUPLICATE_PAYMENT):
        return msgspec.structs.replace(reason, severity=Severity.WARNING)
    return reason


def _refusal_flags(line: Line, reasons: list[Reason]) -> list[FlagDraft]:
    drafts = []
    for reason in reasons:
        kind = REFUSAL_FLAGS.get(reason.code)
        if kind is not None:
            code = reason.trace_code if kind is FlagKind.INVALID_CODE else None
            drafts.append(FlagDraft(kind, "low", line.line_no, code))
    return drafts
