"""POST /v1/nhsa: the gate in the national platform's envelope (CONTRACT §8). The body is read
here rather than by FastAPI, so that a malformed message is answered in the envelope
(`infcode: -1`, HTTP 200, as the platform does) rather than with a 422."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.api.dependencies import CallerDep, ClientsDep, GatePortsDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.auth import service as auth
from service.auth.schemas import Role
from service.kit.clock import utcnow
from service.nhsa import service as nhsa
from service.nhsa.schemas import NhsaReply, NhsaRequestDoc
from service.nhsa.service import NhsaPorts

router = APIRouter(prefix="/v1/nhsa", tags=["nhsa"], responses=ERROR_RESPONSES)


async def get_nhsa_ports(ports: GatePortsDep, clients: ClientsDep) -> NhsaPorts:
    return NhsaPorts(ports, clients.drugs)


NhsaPortsDep = Annotated[NhsaPorts, Depends(get_nhsa_ports)]
_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": NhsaRequestDoc.model_json_schema()}}}}


@router.post("", responses={200: {"model": NhsaReply}}, response_model=None,
             openapi_extra=_BODY)
async def message(
    request: Request, caller: CallerDep, ports: NhsaPortsDep, clients: ClientsDep
) -> JSONResponse:
    received = utcnow()
    auth.require_role(caller, Role.POS, Role.REGULATOR, Role.ADMIN)
    reply = await nhsa.answer(await request.body(), caller, ports, received)
    clients.metrics.nhsa_messages.labels(str(reply["infcode"])).inc()
    return JSONResponse(reply)
