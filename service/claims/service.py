"""Naming a (settlement, line) in the first-seen set, and what an effect does to a code's state
(the rule service/firstseen/apply.lua applies in Redis, here for the consumer's view of its
batch; tests hold the two equal)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import msgspec

from service.claims.schemas import ClaimChange, ClaimEffect, CodeState, Effect, Payment


def owner_token(settlement_id: str, line_no: int) -> int:
    """4 bytes that name a (settlement, line) in the first-seen set: enough to tell a replay
    from a duplicate; PostgreSQL, not this token, is the final word. CRC-32 because the
    rebuild's compiled loader computes it too (service/firstseen/bucket_core.h) and must agree
    with this; the line number after the last ':' keeps the text unambiguous."""
    return zlib.crc32(f"{settlement_id}:{line_no}".encode())


def apply_effect(state: CodeState | None, effect: ClaimEffect) -> CodeState | None:
    """The state after `effect`: each kind changes only what it names and only once, so the
    same effects applied again change nothing (see `Effect`)."""
    kind, token = effect.kind, effect.token
    if kind is Effect.CLAIM:
        return CodeState(token, effect.institution_no, effect.paid_at) if state is None else state
    if kind is Effect.RELEASE:
        held = state is not None and not state.is_split and state.owner == token
        return None if held else state
    if kind is Effect.SELL_UNITS:
        return _sold(state, effect)
    return _returned(state, effect)


def _sold(state: CodeState | None, effect: ClaimEffect) -> CodeState | None:
    if state is None:
        return CodeState(effect.token, effect.institution_no, effect.paid_at, effect.units,
                         effect.pack_size, (effect.token,))
    if not state.is_split or effect.token in state.split_owners:
        return state
    return msgspec.structs.replace(state, units_used=(state.units_used or 0) + effect.units,
                                   split_owners=(*state.split_owners, effect.token))


def _returned(state: CodeState | None, effect: ClaimEffect) -> CodeState | None:
    if state is None or not state.is_split or effect.token not in state.split_owners:
        return state
    left = (state.units_used or 0) - effect.units
    if left <= 0:
        return None
    owners = tuple(t for t in state.split_owners if t != effect.token)
    return msgspec.structs.replace(state, units_used=left, split_owners=owners)


def plan_release(
    settlement_id: str, payments: Iterable[Payment], line_nos: set[int],
    states: Mapping[str, CodeState],
) -> list[ClaimChange]:
    """What reversing these (paid, not yet reversed) lines gives back: a whole pack's claim if
    the line holds it, a split sale's units. A duplicate never held a claim, so it frees
    nothing."""
    changes = []
    for payment in payments:
        state = states.get(payment.canonical)
        if payment.line_no in line_nos and not payment.duplicate and state is not None:
            token = owner_token(settlement_id, payment.line_no)
            change = _release_one(payment, token, state)
            if change is not None:
                changes.append(change)
    return changes


def _release_one(payment: Payment, token: int, state: CodeState) -> ClaimChange | None:
    canonical, line_no, units = payment.canonical, payment.line_no, payment.units
    if not state.is_split:
        held = state.owner == token
        return ClaimChange(canonical, line_no, token, state, None) if held else None
    if token not in state.split_owners or units is None:
        return None
    effect = ClaimEffect(Effect.RETURN_UNITS, canonical, token, 0, 0, units, 0)
    return ClaimChange(canonical, line_no, token, state, _returned(state, effect), -units)
