"""Scan-time verification and a code's history (CONTRACT §4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from service.api.dependencies import CallerDep, ClientsDep, SessionDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.api.schemas import CodeHistory, VerifyOut
from service.auth import service as auth
from service.auth.schemas import Role
from service.decisions.schemas import TraceCodeText
from service.firstseen.service import verify
from service.records.history import history

router = APIRouter(prefix="/v1/codes", tags=["codes"], responses=ERROR_RESPONSES)


class VerifyRequest(BaseModel):
    institution_id: str = Field(min_length=12, max_length=12)
    trace_codes: list[TraceCodeText] = Field(min_length=1, max_length=1000)


@router.post("/verify", responses={200: {"model": VerifyOut}}, response_model=None)
async def verify_codes(
    body: VerifyRequest, caller: CallerDep, clients: ClientsDep
) -> JSONResponse:
    auth.require_role(caller, Role.POS, Role.REGULATOR)
    auth.require_institution(caller, body.institution_id)
    return JSONResponse({"results": await verify(clients.store, body.trace_codes)})


@router.get("/{trace_code}", responses={200: {"model": CodeHistory}}, response_model=None)
async def code_history(
    trace_code: Annotated[str, Path(max_length=256)], caller: CallerDep, session: SessionDep,
    clients: ClientsDep,
) -> JSONResponse:
    auth.require_role(caller, Role.REGULATOR, Role.OPS, Role.ADMIN)
    return JSONResponse(await history(session, clients.store, trace_code))
