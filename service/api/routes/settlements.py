"""The gate and its reversal, and the recorded decision (CONTRACT §4)."""

from __future__ import annotations

import time
from functools import partial

from fastapi import APIRouter

from service.api.dependencies import CallerDep, ClientsDep, GatePortsDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.api.schemas import GateAnswer, ReversalAnswer
from service.auth import service as auth
from service.auth.schemas import Role
from service.decisions import gate
from service.decisions.schemas import SettlementIn
from service.records import reversals
from service.records.reversals import ReversalIn, SettlementNotFound

router = APIRouter(prefix="/v1/settlements", tags=["settlements"], responses=ERROR_RESPONSES)


@router.post("", responses={200: {"model": GateAnswer}}, response_model=None)
async def settle(
    body: SettlementIn, caller: CallerDep, ports: GatePortsDep, clients: ClientsDep
) -> JSONResponse:
    auth.require_role(caller, Role.POS, Role.ADMIN)
    auth.require_institution(caller, body.institution_id)
    started = time.perf_counter()
    answer = await gate.settle(body, ports)
    clients.metrics.gate_request("settlement", answer["decision"], time.perf_counter() - started)
    return JSONResponse(answer)


@router.post(
    "/{settlement_id}/reversal", responses={200: {"model": ReversalAnswer}}, response_model=None
)
async def reverse(
    settlement_id: str, body: ReversalIn, caller: CallerDep, ports: GatePortsDep,
    clients: ClientsDep,
) -> JSONResponse:
    auth.require_role(caller, Role.POS, Role.ADMIN)
    may_act_for = partial(auth.require_institution, caller)
    started = time.perf_counter()
    answer = await gate.reverse(settlement_id, body, ports, may_act_for)
    clients.metrics.gate_request("reversal", "replayed" if answer["replayed"] else "reversed",
                                 time.perf_counter() - started)
    return JSONResponse(answer)


@router.get("/{settlement_id}", responses={200: {"model": GateAnswer}}, response_model=None)
async def get_settlement(
    settlement_id: str, caller: CallerDep, clients: ClientsDep
) -> JSONResponse:
    auth.require_role(caller, Role.POS, Role.REGULATOR, Role.ADMIN)
    view = await reversals.find_settlement(clients.lookups, clients.recent, settlement_id)
    if view is None:
        raise SettlementNotFound(f"settlement {settlement_id} is not recorded")
    auth.require_institution(caller, view.institution_id)
    return JSONResponse({**view.answer, "replayed": False})
