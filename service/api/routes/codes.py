"""Scan-time verification and a code's history (CONTRACT §4)."""

from __future__ import annotations

from typing import Annotated

import msgspec
import orjson
from fastapi import APIRouter, Path, Request
from msgspec import Meta
from starlette.responses import Response

from service.api.dependencies import CallerDep, ClientsDep, SessionDep
from service.api.lean import body_of, caller_of, clients_of, documented, json_answer
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.api.schemas import CodeHistory, VerifyOut
from service.auth import service as auth
from service.auth.schemas import Role
from service.decisions.schemas import InstitutionId, TraceCodeText
from service.firstseen.service import verify
from service.records.history import history

router = APIRouter(prefix="/v1/codes", tags=["codes"], responses=ERROR_RESPONSES)


class VerifyRequest(msgspec.Struct, frozen=True, gc=False):
    institution_id: InstitutionId
    trace_codes: Annotated[list[TraceCodeText], Meta(min_length=1, max_length=1000)]


_VERIFY = msgspec.json.Decoder(VerifyRequest)


@router.post("/verify", responses={200: {"model": VerifyOut}}, response_model=None,
             openapi_extra=documented(VerifyRequest))
async def verify_codes(request: Request) -> Response:
    """The scan-time check: what the first-seen set says of each code, changing nothing."""
    clients = clients_of(request)
    caller = await caller_of(request, clients)
    auth.require_role(caller, Role.POS, Role.REGULATOR)
    body = await body_of(request, _VERIFY)
    auth.require_institution(caller, body.institution_id)
    return json_answer(orjson.dumps({"results": await verify(clients.store, body.trace_codes)}))


@router.get("/{trace_code}", responses={200: {"model": CodeHistory}}, response_model=None)
async def code_history(
    trace_code: Annotated[str, Path(max_length=256)], caller: CallerDep, session: SessionDep,
    clients: ClientsDep,
) -> JSONResponse:
    auth.require_role(caller, Role.REGULATOR, Role.OPS, Role.ADMIN)
    return JSONResponse(await history(session, clients.store, trace_code))
