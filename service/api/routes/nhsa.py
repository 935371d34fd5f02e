"""POST /v1/nhsa: the gate in the national platform's envelope (CONTRACT §8). The body is read
here rather than by FastAPI, so that a malformed message is answered in the envelope
(`infcode: -1`, HTTP 200, as the platform does) rather than with a 422. Its caller and clients
come as the gate's do (service/api/lean.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.lean import BEARER, caller_of, clients_of
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.auth import service as auth
from service.auth.schemas import Role
from service.kit.clock import utcnow
from service.nhsa import service as nhsa
from service.nhsa.schemas import NhsaReply, NhsaRequestDoc
from service.nhsa.service import NhsaPorts

router = APIRouter(prefix="/v1/nhsa", tags=["nhsa"], responses=ERROR_RESPONSES)
_DOCUMENTED: dict[str, Any] = {**BEARER, "requestBody": {"required": True, "content": {
    "application/json": {"schema": NhsaRequestDoc.model_json_schema()}}}}


@router.post("", responses={200: {"model": NhsaReply}}, response_model=None,
             openapi_extra=_DOCUMENTED)
async def message(request: Request) -> JSONResponse:
    received = utcnow()
    clients = clients_of(request)
    caller = await caller_of(request, clients)
    auth.require_role(caller, Role.POS, Role.REGULATOR, Role.ADMIN)
    ports = NhsaPorts(clients.gate, clients.drugs, clients.reader)
    answered = await nhsa.answer(await request.body(), caller, ports, received)
    clients.metrics.nhsa_message(answered.infno, answered.reply["infcode"])
    return JSONResponse(answered.reply)
