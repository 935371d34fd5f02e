"""Reversals (冲正): a settlement's paid lines given back. The gate releases the claims in the
first-seen set at once and sends the reversal on; the consumer records it. A reversal that
arrives on the stream (the insurer's platform) is released and recorded by the consumer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from service.decisions.core import plan_release
from service.decisions.schemas import ClaimChange, Identifier
from service.firstseen.store import FirstSeenStore
from service.kit.errors import Conflict, NotFound, Unprocessable
from service.records import repository
from service.records.recent import RecentAnswers
from service.records.schemas import SettlementView


class ReversalIn(BaseModel):
    reversal_id: Identifier
    line_nos: list[int] | None = Field(default=None, max_length=200)


class SettlementNotFound(NotFound):
    code = "SETTLEMENT_NOT_FOUND"


class ReversalConflict(Conflict):
    code = "REVERSAL_CONFLICT"


class UnknownLine(Unprocessable):
    code = "UNKNOWN_LINE"


async def find_settlement(
    record: AsyncSession | asyncpg.Pool, recent: RecentAnswers | None, settlement_id: str
) -> SettlementView | None:
    """The gate's recent answers first (one Redis GET, and the record may not have it yet),
    then the record: a unit of work's session, or the API's lookup pool."""
    cached = await recent.settlement(settlement_id) if recent is not None else None
    if cached is not None:
        return SettlementView(settlement_id, cached["institution_id"], cached["patient_ref"],
                              bytes.fromhex(cached["body_hash"]), cached["lines"],
                              cached["answer"])
    return await repository.get_settlement(record, settlement_id)


async def find_reversal(
    session: AsyncSession, recent: RecentAnswers | None, reversal_id: str
) -> dict[str, Any] | None:
    row = await repository.get_reversal(session, reversal_id)
    if row is not None:
        return {"settlement_id": row.settlement_id, "line_nos": row.line_nos,
                "answer": row.answer}
    return await recent.reversal(reversal_id) if recent is not None else None


def replay_or_conflict(
    prior: dict[str, Any], settlement_id: str, request: ReversalIn
) -> dict[str, Any]:
    """The same reversal_id again: its first answer if it asked the same, else a conflict."""
    same_lines = _normal(prior["line_nos"]) == _normal(request.line_nos)
    if prior["settlement_id"] != settlement_id or not same_lines:
        raise ReversalConflict(
            f"reversal {request.reversal_id} was used for another settlement or other lines"
        )
    return {**prior["answer"], "replayed": True}


def _normal(line_nos: list[int] | None) -> list[int] | None:
    return None if line_nos is None else sorted(set(line_nos))


async def lines_to_reverse(
    session: AsyncSession, recent: RecentAnswers | None, view: SettlementView,
    requested: list[int] | None,
) -> set[int]:
    """Requested lines that were paid and are not reversed yet; others release nothing."""
    known = {line["line_no"] for line in view.lines}
    unknown = set(requested or []) - known
    if unknown:
        raise UnknownLine(f"settlement {view.settlement_id} has no line {sorted(unknown)}")
    done = await _reversed(session, recent, view.settlement_id, known)
    paid = {line["line_no"] for line in view.lines if line["decision"] == "pay"}
    return (set(requested) if requested is not None else known) & paid - done


async def _reversed(
    session: AsyncSession, recent: RecentAnswers | None, settlement_id: str, known: set[int]
) -> set[int]:
    sets = await repository.reversal_line_sets(session, settlement_id)
    if recent is not None:
        sets += await recent.reversed_line_sets(settlement_id)
    done: set[int] = set()
    for line_nos in sets:
        done |= known if line_nos is None else set(line_nos)
    return done


async def release_in_store(
    store: FirstSeenStore, view: SettlementView, line_nos: set[int]
) -> list[ClaimChange]:
    """Give the claims back in the first-seen set; retried if a code changed underneath."""
    for _ in range(5):
        codes = [c for line in view.lines if line["line_no"] in line_nos
                 for c, _, _ in line.get("paid_codes", [])]
        seen = await store.read(codes)
        states = {code: s.state for code, s in seen.items() if s.state is not None}
        changes = plan_release(view.settlement_id, view.lines, line_nos, states)
        landed = await store.apply(changes, {})
        if all(landed):
            return changes
        await store.apply([c.undone() for c, ok in zip(changes, landed, strict=True) if ok], {})
    raise Conflict("trace codes are changing concurrently; retry")


def released_codes(view: SettlementView, line_nos: set[int]) -> list[list[Any]]:
    """[code, line_no, units] a reversal of these lines gives back, from the record's view:
    every non-duplicate paid code (the record releases only claims the line holds)."""
    return [
        [code, line["line_no"], units]
        for line in view.lines if line["line_no"] in line_nos
        for code, units, duplicate in line.get("paid_codes", []) if not duplicate
    ]


async def record_reversal(
    session: AsyncSession, view: SettlementView, reversal_id: str,
    line_nos: list[int] | None, released: Sequence[Sequence[Any]], reversed_at: dt.datetime,
    answer: dict[str, Any],
) -> None:
    """Idempotent on reversal_id: a redelivered reversal writes nothing."""
    row = {"reversal_id": reversal_id, "settlement_id": view.settlement_id,
           "line_nos": line_nos, "reversed_at": reversed_at, "answer": answer}
    if not await repository.insert_reversal(session, row):
        return
    await repository.insert_code_events(session, [
        {"code": code, "event_at": reversed_at, "type": "reversal",
         "settlement_id": view.settlement_id, "line_no": line_no,
         "institution_id": view.institution_id, "patient_ref": view.patient_ref,
         "units": units, "reversal_id": reversal_id}
        for code, line_no, units in released
    ])
    whole = [code for code, _, units in released if units is None]
    split = [(code, units) for code, _, units in released if units is not None]
    await repository.release_claims(session, view.settlement_id, whole, split)


@dataclass(frozen=True, slots=True)
class ReversalEventFields:
    settlement_id: str
    reversal_id: str
    line_nos: list[int] | None
    source: str | None
    reversed_at: dt.datetime
    effects: dict[str, Any] | None


async def record_reversal_event(
    session: AsyncSession, store: FirstSeenStore, event: ReversalEventFields,
    release_again: bool = False,
) -> str | None:
    """Record a reversal from the settlements topic; returns why it cannot be (for the DLQ).
    A gate reversal was released by the gate; a stream reversal is released here, from what
    the record says the lines paid, so a redelivery releases the same codes again.
    `release_again`: a gate reversal made before the first-seen set was last rebuilt, whose
    codes the rebuild or a consumer's heal may have put back (its sale was recorded, the
    reversal not yet): released here as well, which changes nothing if they are not held."""
    view = await find_settlement(session, None, event.settlement_id)
    if view is None:
        return f"reversal {event.reversal_id} names unknown settlement {event.settlement_id}"
    if event.source == "gate" and event.effects is not None:
        released, answer = event.effects["released"], event.effects["answer"]
        if release_again:
            await _release_again(session, store, view, event.line_nos)
    elif await repository.get_reversal(session, event.reversal_id) is not None:
        return None
    else:
        try:
            lines = await lines_to_reverse(session, None, view, event.line_nos)
        except UnknownLine as exc:
            return exc.message
        await release_in_store(store, view, lines)
        released = released_codes(view, lines)
        answer = reversal_answer(view.settlement_id, event.reversal_id, released)
    await record_reversal(session, view, event.reversal_id, event.line_nos, released,
                          event.reversed_at, answer)
    return None


async def _release_again(
    session: AsyncSession, store: FirstSeenStore, view: SettlementView,
    line_nos: list[int] | None,
) -> None:
    try:
        lines = await lines_to_reverse(session, None, view, line_nos)
    except UnknownLine:  # the gate checked the lines; an event that names others releases none
        return
    await release_in_store(store, view, lines)


def reversal_answer(
    settlement_id: str, reversal_id: str, released: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    return {"settlement_id": settlement_id, "reversal_id": reversal_id,
            "released": [code for code, _, _ in released], "replayed": False}
