"""A code's whole history for regulators (GET /v1/codes/{trace_code}), and its payments for a
flag's case (GET /v1/flags/{flag_id}).

One order everywhere: event time (a payment's settled_at, a reversal's own time), ties by
record order. Several events of a code recorded in one transaction share its `recorded_at`;
among those the record's own order is recovered from what it knows: a sale comes before its
reversal, the payment holding the claim before a duplicate paid under `duplicate_policy:
flag`, then settlement and line. Each event carries its `recorded_at`, so a reader sees when
the record learnt of it too (a sale settled before a reversal may be recorded after it)."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from service.firstseen.service import code_status
from service.firstseen.store import FirstSeenStore
from service.flags import repository as flags_repository
from service.kit.errors import NotFound, Unprocessable
from service.records import history_repository, repository
from service.records.models import CodeEvent
from service.tracecodes.schemas import InvalidTraceCode
from service.tracecodes.service import parse_trace_code


class CodeNotSeen(NotFound):
    code = "CODE_NOT_SEEN"


class InvalidTraceCodeError(Unprocessable):
    code = "INVALID_TRACE_CODE"


async def history(session: AsyncSession, store: FirstSeenStore, text: str) -> dict[str, Any]:
    code = parse_trace_code(text)
    if isinstance(code, InvalidTraceCode):
        raise InvalidTraceCodeError(code.reason)
    events = in_history_order(await repository.code_history(session, code.canonical))
    flags = await flags_repository.for_code(session, code.canonical)
    if not events and not flags:
        raise CodeNotSeen(f"trace code {code.canonical} has never been settled")
    seen = await store.read([code.canonical])
    status, _ = code_status(seen.get(code.canonical))
    return {
        "trace_code": code.canonical, "format": code.format.value, "status": status,
        "events": [_event(event) for event in events],
        "flags": [flags_repository.case_json(flag) for flag in flags],
    }


async def payments(session: AsyncSession, code: str | None) -> list[dict[str, Any]]:
    """Every payment of a canonical code, in history order (none for a flag without a code)."""
    if code is None:
        return []
    events = in_history_order(await repository.code_history(session, code))
    return [_event(event) for event in events if event.type == "payment"]


def in_history_order(events: list[CodeEvent]) -> list[CodeEvent]:
    return sorted(events, key=_order)


def _order(event: CodeEvent) -> tuple[Any, ...]:
    return (event.event_at, event.recorded_at, event.type == "reversal", event.duplicate,
            event.settlement_id, event.line_no)


def _event(event: CodeEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": event.type, "settlement_id": event.settlement_id, "line_no": event.line_no,
        "institution_id": event.institution_id, "at": event.event_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(), "patient_ref": event.patient_ref,
    }
    if event.units is not None:
        body["units"] = event.units
    if event.duplicate:
        body["duplicate"] = True
    if event.reversal_id is not None:
        body["reversal_id"] = event.reversal_id
    return body


async def with_reversals(lookups: asyncpg.Pool, answer: dict[str, Any]) -> dict[str, Any]:
    """A recorded decision (GET /v1/settlements/{settlement_id}) with what has been reversed
    of it since: `reversals`, each with its `line_nos` as asked (null: every line), the codes
    it `released` and when. A reversal shows once the record holds it (within a second)."""
    rows = await history_repository.reversals_of(lookups, answer["settlement_id"])
    reversals = [{**row, "reversed_at": row["reversed_at"].isoformat()} for row in rows]
    return {**answer, "reversals": reversals}
