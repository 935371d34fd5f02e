"""A batch the record holds already (redelivered after a crash): its effects on the first-seen
set, again, from what the record says it did. Nothing is decided twice; the crash may have
come between the commit and Redis, so the effects are applied again (each is idempotent).

A whole pack is claimed again only where the record's arbiter kept it for this line: the
record is the final word on first payments, not the line's own account of itself."""

from __future__ import annotations

import msgspec

from service.claims.schemas import ClaimEffect, Effect
from service.claims.service import owner_token
from service.institutions.schemas import InstitutionRef
from service.kit.clock import epoch_seconds
from service.records.repository import ClaimOwner
from service.records.schemas import SettlementView
from service.settlements.events import (
    DeadLetter,
    Incoming,
    ReversalEvent,
    SettlementEvent,
    TopicEvent,
)


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """What the record holds of the batch's settlements (and its reversals' targets)."""

    views: dict[str, SettlementView]  # by settlement
    owners: dict[str, ClaimOwner]  # the record's claims of their codes
    institutions: dict[str, InstitutionRef]


class Healing(msgspec.Struct, gc=False):
    effects: list[ClaimEffect] = []
    forget: list[str] = []
    dead: list[DeadLetter] = []


def heal(events: list[tuple[Incoming, TopicEvent]], recorded: Recorded) -> Healing:
    out = Healing()
    for record, event in events:
        if isinstance(event, ReversalEvent):
            _reversed(event, recorded, out)
        elif event.settlement_id in recorded.views:
            _settled(record, event, recorded, out)
    return out


def _settled(
    record: Incoming, event: SettlementEvent, recorded: Recorded, out: Healing
) -> None:
    view = recorded.views[event.settlement_id]
    paid_at = epoch_seconds(view.settled_at)
    if event.from_gate and event.effects is not None:
        if bytes.fromhex(event.effects.body_hash) != view.body_hash:
            _conflicting_gate(record, event, view, out)
            return
        out.forget += [claim.code for claim in event.effects.claims]
    number = recorded.institutions[view.institution_id].number
    for payment in view.payments():
        owner = recorded.owners.get(payment.canonical)
        if payment.duplicate or owner is None:
            continue
        token = owner_token(view.settlement_id, payment.line_no)
        if payment.units is not None:
            out.effects.append(ClaimEffect(Effect.SELL_UNITS, payment.canonical, token,
                                           number, paid_at, payment.units,
                                           owner.pack_size or 0))
        elif (owner.settlement_id, owner.line_no) == (view.settlement_id, payment.line_no):
            out.effects.append(ClaimEffect(Effect.CLAIM, payment.canonical, token, number,
                                           paid_at, 0, 0))


def _conflicting_gate(
    record: Incoming, event: SettlementEvent, view: SettlementView, out: Healing
) -> None:
    """The gate decided a settlement the record holds with another body (it could not know:
    the first came from the insurer's platform): its claims are given back and the event
    dead-lettered, so no code stays held by a settlement the record never kept."""
    assert event.effects is not None
    kept = {payment.canonical for payment in view.payments()}
    for claim in event.effects.claims:
        if claim.code not in kept:
            token = owner_token(event.settlement_id, claim.line_no)
            kind = Effect.RETURN_UNITS if claim.units else Effect.RELEASE
            out.effects.append(ClaimEffect(kind, claim.code, token, 0, 0, claim.units or 0, 0))
        out.forget.append(claim.code)
    out.dead.append(DeadLetter(record, f"settlement {event.settlement_id} is recorded with "
                                       "another body; the gate's claims were given back"))


def _reversed(event: ReversalEvent, recorded: Recorded, out: Healing) -> None:
    view = recorded.views.get(event.settlement_id)
    if view is None:
        return
    lines = None if event.line_nos is None else set(event.line_nos)
    for payment in view.payments():
        if payment.duplicate or (lines is not None and payment.line_no not in lines):
            continue
        token = owner_token(view.settlement_id, payment.line_no)
        kind = Effect.RELEASE if payment.units is None else Effect.RETURN_UNITS
        out.effects.append(ClaimEffect(kind, payment.canonical, token, 0, 0,
                                       payment.units or 0, 0))
