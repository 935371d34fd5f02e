"""The decision core, without servers: every reason code, severity and flag rule of CONTRACT
§4-§5, split accounting and releases."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from service.claims.schemas import ClaimEffect, CodeState, Effect, FirstPayment, Payment
from service.claims.service import apply_effect, owner_token, plan_release
from service.decisions.core import DecisionContext, decide
from service.decisions.schemas import Decision, ReasonCode, Settlement, Severity, Source
from service.flags.schemas import FlagKind
from service.policy.schemas import PolicyConfig
from service.settings import DEFAULT_GO_LIVE, DuplicatePolicy

POLICY = PolicyConfig(go_live=dict(DEFAULT_GO_LIVE))
AFTER = dt.datetime(2025, 7, 1, 2, 0, tzinfo=dt.UTC)
BEFORE = dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.UTC)
A, B, C = "81234560000000000011", "81234560000000000028", "81234570000000000035"
FIRST = FirstPayment("S-FIRST", "P00000000002", AFTER)


def _settlement(*lines: dict[str, Any], sid: str = "S-1") -> Settlement:
    return msgspec.convert({
        "settlement_id": sid, "institution_id": "P00000000001",
        "settled_at": "2025-07-01 10:00:00", "lines": list(lines),
    }, Settlement)


def _line(no: int, codes: list[str], **extra: Any) -> dict[str, Any]:
    return {"line_no": no, "drug_code": "X", "quantity": max(len(codes), 1),
            "trace_codes": codes, **extra}


def _decide(
    settlement: Settlement, *, states: dict[str, CodeState] | None = None,
    enforced: bool = True, source: Source = Source.GATE, policy: PolicyConfig = POLICY,
    at: dt.datetime = AFTER,
) -> Decision:
    ctx = DecisionContext(source, enforced, 1, "P00000000001", at, policy, states or {},
                          {code: FIRST for code in (states or {})})
    return decide(settlement, ctx)


def _codes(decision: Decision, line_no: int) -> list[tuple[str, str]]:
    line = next(line for line in decision.lines if line.line_no == line_no)
    return [(r.code.value, r.severity.value) for r in line.reasons]


def _paid_elsewhere() -> CodeState:
    return CodeState(owner=123, institution_no=2, paid_at=int(AFTER.timestamp()))


def test_fresh_codes_are_paid_and_claimed() -> None:
    decision = _decide(_settlement(_line(1, [A, B])))
    assert decision.outcome == "pay"
    assert [c.canonical for c in decision.changes] == [A, B]
    assert all(c.expected is None for c in decision.changes)
    assert decision.flags == []


def test_duplicate_payment_rejects_the_line_and_flags_high_across_institutions() -> None:
    decision = _decide(_settlement(_line(1, [A]), _line(2, [C])), states={C: _paid_elsewhere()})
    assert decision.outcome == "partial"
    assert _codes(decision, 2) == [("DUPLICATE_PAYMENT", "error")]
    reason = decision.lines[1].reasons[0]
    assert reason.first_payment == FIRST
    assert reason.trace_code == C
    assert [(f.kind, f.severity, f.line_no) for f in decision.flags] == [
        (FlagKind.DUPLICATE_PAYMENT, "high", 2)
    ]
    assert [c.canonical for c in decision.changes] == [A]  # a rejected line claims nothing


def test_duplicate_at_the_same_institution_is_medium() -> None:
    state = CodeState(owner=123, institution_no=1, paid_at=0)
    decision = _decide(_settlement(_line(1, [C])), states={C: state})
    assert decision.flags[0].severity == "medium"


def test_a_line_with_one_duplicate_claims_none_of_its_codes() -> None:
    decision = _decide(_settlement(_line(1, [A, C])), states={C: _paid_elsewhere()})
    assert decision.outcome == "reject"
    assert decision.changes == []


def test_replay_of_the_claiming_line_is_not_a_duplicate() -> None:
    state = CodeState(owner_token("S-1", 1), 1, 0)
    decision = _decide(_settlement(_line(1, [A])), states={A: state})
    assert decision.outcome == "pay"
    assert decision.flags == []
    assert decision.changes == []


def test_duplicate_policy_flag_pays_but_never_takes_the_claim() -> None:
    policy = PolicyConfig(go_live=dict(DEFAULT_GO_LIVE), duplicate_policy=DuplicatePolicy.FLAG)
    decision = _decide(_settlement(_line(1, [C])), states={C: _paid_elsewhere()}, policy=policy)
    assert decision.outcome == "pay"
    assert _codes(decision, 1) == [("DUPLICATE_PAYMENT", "warning")]
    assert decision.changes == []
    assert [p.duplicate for p in decision.payments] == [True]
    assert decision.flags[0].kind is FlagKind.DUPLICATE_PAYMENT


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (_line(1, []), [("MISSING_TRACE_CODE", "error")]),
        (_line(1, ["12345678901234567890"]), [("INVALID_TRACE_CODE", "error")]),
        (_line(1, [A], quantity=2), [("QUANTITY_MISMATCH", "error")]),
        (_line(1, [A, B], split=True, pack_size=10, quantity=1), [("QUANTITY_MISMATCH", "error")]),
        (_line(1, [A], split=True, quantity=1), [("QUANTITY_MISMATCH", "error")]),
        (_line(1, [A, A], quantity=2), [("DUPLICATE_IN_SETTLEMENT", "error")]),
        (_line(1, [], no_code_reason="herbal_pieces"), [("EXEMPT", "info")]),
        (_line(1, [], no_code_reason="herbal_granules"), [("EXEMPT", "info")]),
        (_line(1, [], no_code_reason="inpatient_split"), [("EXEMPT", "info")]),
        (_line(1, [], no_code_reason="legacy_stock"), [("EXEMPT", "info")]),
    ],
)
def test_reason_codes_when_enforced(line: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    decision = _decide(_settlement(line))
    assert _codes(decision, 1) == expected
    assert decision.outcome == ("pay" if expected[0][1] == "info" else "reject")


def test_legacy_stock_expires_at_its_sunset() -> None:
    late = dt.datetime(2025, 12, 31, 16, 0, tzinfo=dt.UTC)  # 2026-01-01 00:00 Shanghai
    decision = _decide(_settlement(_line(1, [], no_code_reason="legacy_stock")), at=late)
    assert _codes(decision, 1) == [("MISSING_TRACE_CODE", "error")]


def test_before_go_live_everything_is_a_warning_and_paid_but_duplicates_still_flag() -> None:
    settlement = _settlement(_line(1, []), _line(2, [C]))
    decision = _decide(settlement, states={C: _paid_elsewhere()}, enforced=False, at=BEFORE)
    assert decision.outcome == "pay"
    assert not decision.enforced
    assert _codes(decision, 1) == [("MISSING_TRACE_CODE", "warning")]
    assert _codes(decision, 2) == [("DUPLICATE_PAYMENT", "warning")]
    assert [f.kind for f in decision.flags] == [FlagKind.DUPLICATE_PAYMENT]
    assert decision.changes == []  # the duplicate was paid without taking the claim


def test_stream_turns_refusals_into_flags_only_when_enforced() -> None:
    settlement = _settlement(_line(1, []), _line(2, ["bad"]), _line(3, [A], quantity=3))
    enforced = _decide(settlement, source=Source.STREAM)
    kinds = [(f.kind, f.trace_code) for f in enforced.flags]
    assert kinds == [(FlagKind.MISSING_CODE, None), (FlagKind.INVALID_CODE, "bad"),
                     (FlagKind.QUANTITY_MISMATCH, None)]
    assert _decide(settlement, source=Source.STREAM, enforced=False).flags == []
    assert _decide(settlement, source=Source.GATE).flags == []


def test_in_settlement_duplicate_is_a_flag_only_on_the_stream() -> None:
    settlement = _settlement(_line(1, [A]), _line(2, [A]))
    assert _decide(settlement).flags == []
    stream = _decide(settlement, source=Source.STREAM)
    assert [(f.kind, f.line_no) for f in stream.flags] == [(FlagKind.DUPLICATE_PAYMENT, 2)]


def _split(no: int, code: str, units: int, pack: int = 10) -> dict[str, Any]:
    return _line(no, [code], split=True, quantity=units, pack_size=pack)


def test_split_sales_add_up_within_the_pack() -> None:
    first = _decide(_settlement(_split(1, A, 4)))
    opened = first.changes[0].new
    assert opened is not None
    assert (opened.units_used, opened.pack_size) == (4, 10)
    second = _decide(_settlement(_split(1, A, 6, pack=99), sid="S-2"), states={A: opened})
    assert second.outcome == "pay"
    after = second.changes[0].new
    assert after is not None
    assert (after.units_used, after.pack_size) == (10, 10)


def test_split_overuse_and_cross_institution() -> None:
    opened = CodeState(owner_token("S-0", 1), 1, 0, 8, 10, (owner_token("S-0", 1),))
    over = _decide(_settlement(_split(1, A, 3)), states={A: opened})
    assert _codes(over, 1) == [("SPLIT_OVERUSE", "error")]
    assert over.flags[0].kind is FlagKind.SPLIT_OVERUSE
    elsewhere = CodeState(1, 2, 0, 2, 10, (1,))
    cross = _decide(_settlement(_split(1, A, 1)), states={A: elsewhere})
    assert _codes(cross, 1) == [("SPLIT_CROSS_INSTITUTION", "error")]
    assert (cross.flags[0].kind, cross.flags[0].severity) == (
        FlagKind.SPLIT_CROSS_INSTITUTION, "high")


def test_whole_sale_of_an_opened_pack_is_overuse() -> None:
    opened = CodeState(1, 1, 0, 2, 10, (1,))
    decision = _decide(_settlement(_line(1, [A])), states={A: opened})
    assert _codes(decision, 1) == [("SPLIT_OVERUSE", "error")]


def test_whole_sale_of_an_opened_pack_at_another_institution_is_cross_institution() -> None:
    elsewhere = CodeState(1, 2, 0, 2, 10, (1,))
    decision = _decide(_settlement(_line(1, [A])), states={A: elsewhere})
    assert _codes(decision, 1) == [("SPLIT_CROSS_INSTITUTION", "error")]


def test_a_paid_whole_sale_of_an_opened_pack_never_takes_over_its_claim() -> None:
    """Before go-live the line is paid with its reason, but the pack stays opened."""
    opened = CodeState(1, 1, 0, 2, 10, (1,))
    decision = _decide(_settlement(_line(1, [A])), states={A: opened}, enforced=False)
    assert decision.outcome == "pay"
    assert _codes(decision, 1) == [("SPLIT_OVERUSE", "warning")]  # not enforced: a warning
    assert decision.changes == []


def test_split_sale_of_a_whole_paid_pack_is_a_duplicate() -> None:
    decision = _decide(_settlement(_split(1, A, 1)), states={A: _paid_elsewhere()})
    assert _codes(decision, 1) == [("DUPLICATE_PAYMENT", "error")]


def test_release_gives_back_whole_claims_and_split_units() -> None:
    token = owner_token("S-1", 1)
    payments = [Payment(A, 1, None, False), Payment(B, 1, 3, False), Payment(C, 1, None, True)]
    states = {A: CodeState(token, 1, 0), B: CodeState(7, 1, 0, 5, 10, (7, token)),
              C: _paid_elsewhere()}
    changes = plan_release("S-1", payments, {1}, states)
    assert [(c.canonical, c.new) for c in changes][0] == (A, None)
    split = changes[1].new
    assert split is not None
    assert (split.units_used, split.split_owners) == (2, (7,))
    assert len(changes) == 2  # the duplicate held nothing


def test_severity_enum_values_match_the_contract() -> None:
    assert {s.value for s in Severity} == {"error", "warning", "info"}
    assert {r.value for r in ReasonCode} >= {"MISSING_TRACE_CODE", "SPLIT_OVERUSE", "EXEMPT"}


def _sale(token: int, units: int) -> ClaimEffect:
    return ClaimEffect(Effect.SELL_UNITS, A, token, 7, 0, units, 10)


def test_a_split_sale_is_put_back_once_and_never_over_a_whole_pack() -> None:
    first, second = owner_token("S-1", 1), owner_token("S-2", 1)
    opened = apply_effect(None, _sale(first, 2))
    assert opened == CodeState(first, 7, 0, 2, 10, (first,))
    both = apply_effect(opened, _sale(second, 3))
    assert both is not None
    assert (both.units_used, both.split_owners) == (5, (first, second))
    assert apply_effect(both, _sale(second, 3)) == both  # listed already
    whole = CodeState(first, 7, 0)
    assert apply_effect(whole, _sale(second, 3)) == whole  # a whole pack is not opened


def test_effects_change_only_what_they_name_and_only_once() -> None:
    """What a redelivered batch relies on: its effects applied again change nothing."""
    a, b = owner_token("S-A", 1), owner_token("S-B", 1)
    claim_a = ClaimEffect(Effect.CLAIM, A, a, 1, 0, 0, 0)
    release_a = ClaimEffect(Effect.RELEASE, A, a, 0, 0, 0, 0)
    claim_b = ClaimEffect(Effect.CLAIM, A, b, 2, 0, 0, 0)
    state = None
    for effect in (claim_a, release_a, claim_b):
        state = apply_effect(state, effect)
    assert state == CodeState(b, 2, 0)
    for effect in (claim_a, release_a, claim_b):  # the same batch, once more
        state = apply_effect(state, effect)
    assert state == CodeState(b, 2, 0)
    returned = ClaimEffect(Effect.RETURN_UNITS, A, a, 0, 0, 2, 0)
    assert apply_effect(apply_effect(None, _sale(a, 2)), returned) is None
