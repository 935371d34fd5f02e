"""Flags: named by their natural key, built from the decision core's drafts."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.flags import repository
from service.flags.models import Flag
from service.flags.repository import FlagFilter
from service.flags.schemas import FlagDraft, FlagRecord
from service.kit.errors import Unprocessable


def flag_id(kind: str, settlement_id: str, line_no: int, trace_code: str | None) -> str:
    """One flag per (kind, settlement, line, trace code), ever: the id is that key's digest, so
    the gate can name a flag before it is recorded and a redelivery names the same one."""
    key = f"{kind}\x00{settlement_id}\x00{line_no}\x00{trace_code or ''}"
    return "fl_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def build_flag(
    draft: FlagDraft, *, settlement_id: str, institution_id: str, settled_at: dt.datetime,
    detected_at: dt.datetime, patient_ref: str | None,
) -> FlagRecord:
    """The one way a finding becomes a flag, at the gate, in a consumer and for the record's
    own arbiter alike."""
    return FlagRecord(
        flag_id(draft.kind.value, settlement_id, draft.line_no, draft.trace_code),
        draft.kind.value, draft.severity, draft.trace_code, institution_id, settlement_id,
        draft.line_no, settled_at, detected_at, patient_ref, draft.first_payment,
    )


class InvalidCursor(Unprocessable):
    code = "INVALID_CURSOR"


def encode_cursor(detected_at: dt.datetime, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{detected_at.isoformat()}|{seq}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        at, seq = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        moment, number = dt.datetime.fromisoformat(at), int(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc
    if moment.tzinfo is None or not 0 <= number < 2**63:
        raise InvalidCursor("cursor is not one this API returned")
    return in_record_range("cursor", moment), number


def in_record_range(name: str, moment: dt.datetime) -> dt.datetime:
    """An instant the record can compare with (year 1 or 9999 overflow in UTC)."""
    try:
        utc = moment.astimezone(dt.UTC)
    except OverflowError as exc:
        raise Unprocessable(f"{name} is out of range") from exc
    if not 1900 <= utc.year < 9999:
        raise Unprocessable(f"{name} is out of range")
    return utc


async def list_flags(
    session: AsyncSession, where: FlagFilter, cursor: str | None, limit: int
) -> dict[str, Any]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.page(session, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].detected_at, rows[-1].seq) if more else None
    return {"items": [repository.case_json(row) for row in rows], "next_cursor": next_cursor}


async def follow(
    sessionmaker: async_sessionmaker[AsyncSession], where: FlagFilter,
    last_event_id: str | None, poll_s: float = 0.2, heartbeat_s: float = 15.0,
) -> AsyncIterator[str]:
    """Server-Sent Events: every flag once, in commit-safe order, resuming after the last id.
    Each poll uses a short session: holding one open would hold back the very horizon
    (the oldest running transaction) the stream waits for."""
    async with sessionmaker() as session:
        position = await repository.stream_position(session, last_event_id)
    quiet = 0.0
    while True:
        async with sessionmaker() as session:
            rows = await repository.stream_after(session, position, where)
        for row in rows:
            position = (row.tx, row.seq)
            yield _sse(row)
        quiet = 0.0 if rows else quiet + poll_s
        if quiet >= heartbeat_s:
            quiet = 0.0
            yield ": keep-alive\n\n"
        if not rows:
            await asyncio.sleep(poll_s)


def _sse(row: Flag) -> str:
    data = orjson.dumps(repository.case_json(row)).decode()
    return f"event: flag\nid: {row.flag_id}\ndata: {data}\n\n"
