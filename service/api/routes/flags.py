"""The flag list and the flag stream (CONTRACT §4), and triage of each flag's case (§7)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from service.api.dependencies import CallerDep, ClientsDep, SessionDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.api.schemas import FlagCaseView
from service.auth import service as auth
from service.auth.schemas import Role
from service.flags import service as flags
from service.flags import triage
from service.flags.repository import FlagFilter
from service.flags.schemas import (
    CaseSummary,
    FlagCase,
    FlagKind,
    FlagPage,
    FlagStatus,
    FlagUpdate,
)
from service.kit.errors import Unprocessable
from service.records.history import payments

router = APIRouter(prefix="/v1/flags", tags=["flags"], responses=ERROR_RESPONSES)

READERS = (Role.REGULATOR, Role.OPS, Role.ADMIN)
TRIAGERS = (Role.OPS, Role.REGULATOR, Role.ADMIN)

InstitutionQuery = Annotated[str | None, Query(max_length=12)]
StatusQuery = Annotated[
    list[FlagStatus] | None,
    Query(max_length=4, description="repeatable: any of these (`status=new&status=escalated`)"),
]


def _filter(
    kind: FlagKind | None = None, institution_id: str | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None,
    status: list[FlagStatus] | None = None,
) -> FlagFilter:
    return FlagFilter(kind.value if kind else None, institution_id, _instant("since", since),
                      _instant("until", until), tuple(sorted({s.value for s in status or []})))


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
    institution_id: InstitutionQuery = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    status: StatusQuery = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    auth.require_role(caller, *READERS)
    where = _filter(kind, institution_id, since, until, status)
    return JSONResponse(await flags.list_flags(session, where, cursor, limit))


@router.get("/stream", response_class=StreamingResponse)
async def stream_flags(
    caller: CallerDep, clients: ClientsDep,
    kind: FlagKind | None = None,
    institution_id: InstitutionQuery = None,
    status: StatusQuery = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    auth.require_role(caller, *READERS)
    where = _filter(kind, institution_id, status=status)
    events = flags.follow(clients.sessionmaker, where, last_event_id)
    return StreamingResponse(
        events, media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/summary")
async def case_summary(
    caller: CallerDep, session: SessionDep, institution_id: InstitutionQuery = None
) -> CaseSummary:
    auth.require_role(caller, *READERS)
    return await triage.summary(session, institution_id)


FlagIdPath = Annotated[str, Path(max_length=64)]


@router.get("/{flag_id}", responses={200: {"model": FlagCaseView}}, response_model=None)
async def get_flag(flag_id: FlagIdPath, caller: CallerDep, session: SessionDep) -> JSONResponse:
    auth.require_role(caller, *READERS)
    found = await triage.case(session, flag_id)
    return JSONResponse({**found, "payments": await payments(session, found["trace_code"])})


@router.patch("/{flag_id}", responses={200: {"model": FlagCase}}, response_model=None)
async def update_flag(
    flag_id: FlagIdPath, body: FlagUpdate, caller: CallerDep, session: SessionDep
) -> JSONResponse:
    auth.require_role(caller, *TRIAGERS)
    return JSONResponse(await triage.update_case(session, caller, flag_id, body))
