"""A code's whole history for regulators (GET /v1/codes/{trace_code})."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.firstseen.service import code_status
from service.firstseen.store import FirstSeenStore
from service.flags import repository as flags_repository
from service.kit.errors import NotFound, Unprocessable
from service.records import repository
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
    events = await repository.code_history(session, code.canonical)
    flags = await flags_repository.for_code(session, code.canonical)
    if not events and not flags:
        raise CodeNotSeen(f"trace code {code.canonical} has never been settled")
    seen = await store.read([code.canonical])
    status, _ = code_status(seen.get(code.canonical))
    return {
        "trace_code": code.canonical, "format": code.format.value, "status": status,
        "events": [_event(event) for event in events],
        "flags": [flags_repository.flag_json(flag) for flag in flags],
    }


def _event(event: CodeEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": event.type, "settlement_id": event.settlement_id, "line_no": event.line_no,
        "institution_id": event.institution_id, "at": event.event_at.isoformat(),
        "patient_ref": event.patient_ref,
    }
    if event.units is not None:
        body["units"] = event.units
    if event.duplicate:
        body["duplicate"] = True
    if event.reversal_id is not None:
        body["reversal_id"] = event.reversal_id
    return body
