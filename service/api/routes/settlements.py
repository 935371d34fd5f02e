"""The gate and its reversal, and the recorded decision (CONTRACT §4). The first two are the
hot routes: see service/api/lean.py."""

from __future__ import annotations

import time
from functools import partial

import msgspec
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.lean import body_of, caller_of, clients_of, documented, json_answer
from service.api.responses import ERROR_RESPONSES
from service.api.schemas import GateAnswer, RecordedSettlement, ReversalAnswer
from service.auth import service as auth
from service.auth.schemas import Role
from service.decisions.checks import decode_settlement
from service.decisions.schemas import Settlement
from service.records.history import with_reversals
from service.settlements import gate
from service.settlements.schemas import ReversalRequest, SettlementNotFound

router = APIRouter(prefix="/v1/settlements", tags=["settlements"], responses=ERROR_RESPONSES)
_REVERSAL = msgspec.json.Decoder(ReversalRequest)


@router.post("", responses={200: {"model": GateAnswer}}, response_model=None,
             openapi_extra=documented(Settlement))
async def settle(request: Request) -> Response:
    """The gate: decides every line, claims the codes of paid lines, sends the settlement on
    to the record and answers once Kafka has it."""
    clients = clients_of(request)
    caller = await caller_of(request, clients)
    auth.require_role(caller, Role.POS, Role.ADMIN)
    body = decode_settlement(await request.body())
    auth.require_institution(caller, body.institution_id)
    started = time.perf_counter()
    answer = await gate.settle(body, clients.gate)
    clients.metrics.gate_request("settlement", answer.decision, time.perf_counter() - started)
    return json_answer(answer.body)


@router.post("/{settlement_id}/reversal", responses={200: {"model": ReversalAnswer}},
             response_model=None, openapi_extra=documented(ReversalRequest))
async def reverse(settlement_id: str, request: Request) -> Response:
    clients = clients_of(request)
    caller = await caller_of(request, clients)
    auth.require_role(caller, Role.POS, Role.ADMIN)
    body = await body_of(request, _REVERSAL)
    may_act_for = partial(auth.require_institution, caller)
    started = time.perf_counter()
    answer = await gate.reverse(settlement_id, body, clients.gate, may_act_for)
    clients.metrics.gate_request("reversal", answer.decision, time.perf_counter() - started)
    return json_answer(answer.body)


@router.get("/{settlement_id}", responses={200: {"model": RecordedSettlement}}, response_model=None,
            openapi_extra=documented())
async def get_settlement(settlement_id: str, request: Request) -> Response:
    """The recorded decision (or the gate's answer while the record catches up)."""
    clients = clients_of(request)
    caller = await caller_of(request, clients)
    auth.require_role(caller, Role.POS, Role.REGULATOR, Role.ADMIN)
    view = await gate.find_settlement(clients.gate, settlement_id)
    if view is None:
        raise SettlementNotFound(f"settlement {settlement_id} is not recorded")
    auth.require_institution(caller, view.institution_id)
    answer = {**orjson.loads(view.answer), "replayed": False}
    return json_answer(orjson.dumps(await with_reversals(clients.lookups, answer)))
