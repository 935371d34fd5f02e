"""The flag list and the flag stream (CONTRACT §4)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from service.api.dependencies import CallerDep, ClientsDep, SessionDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.auth import service as auth
from service.auth.schemas import Role
from service.flags import service as flags
from service.flags.repository import FlagFilter
from service.flags.schemas import FlagKind, FlagPage
from service.kit.errors import Unprocessable

router = APIRouter(prefix="/v1/flags", tags=["flags"], responses=ERROR_RESPONSES)

READERS = (Role.REGULATOR, Role.OPS, Role.ADMIN)


def _filter(
    kind: FlagKind | None = None,
    institution_id: Annotated[str | None, Query(max_length=12)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> FlagFilter:
    return FlagFilter(kind.value if kind else None, institution_id, _instant("since", since),
                      _instant("until", until))


def _instant(name: str, moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise Unprocessable(f"{name} must be RFC 3339 with an offset")
    return flags.in_record_range(name, moment)


@router.get("", responses={200: {"model": FlagPage}}, response_model=None)
async def list_flags(
    caller: CallerDep, session: SessionDep,
    kind: FlagKind | None = None,
    institution_id: Annotated[str | None, Query(max_length=12)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    auth.require_role(caller, *READERS)
    where = _filter(kind, institution_id, since, until)
    return JSONResponse(await flags.list_flags(session, where, cursor, limit))


@router.get("/stream", response_class=StreamingResponse)
async def stream_flags(
    caller: CallerDep, clients: ClientsDep,
    kind: FlagKind | None = None,
    institution_id: Annotated[str | None, Query(max_length=12)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    auth.require_role(caller, *READERS)
    events = flags.follow(clients.sessionmaker, _filter(kind, institution_id), last_event_id)
    return StreamingResponse(
        events, media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
