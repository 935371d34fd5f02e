"""POST /v1/nhsa: an NHSA message decided by the gate itself (CONTRACT §8). A sale becomes the
gate's settlement and goes through `gate.settle`, a return the gate's reversal through
`gate.reverse`, each from one place below: there is no second rule set and no second claim
path, so an NHSA sale and a JSON sale of the same codes are judged alike, in one order."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth import service as auth
from service.auth.schemas import Caller, Role
from service.decisions.schemas import Settlement
from service.drugs import service as drugs
from service.institutions import repository as institutions_repository
from service.kit.clock import SHANGHAI, utcnow
from service.kit.errors import AppError, Conflict, NotFound, Unprocessable
from service.kit.ttl_cache import TtlCache
from service.nhsa import mapping, repository, wording
from service.nhsa.repository import SaleEvent
from service.nhsa.schemas import (
    Envelope,
    Infno,
    MessageRefused,
    ReturnRequest,
    Sale,
    SalesQuery,
)
from service.nhsa.vendor import local_text
from service.records.schemas import SettlementView
from service.settlements import gate
from service.settlements.gate import GatePorts

Output = dict[str, Any]
# What the gate refuses about a request itself (a conflict with an earlier one, an unknown
# institution): the message cannot be taken, `infcode: -1`. Keys (401/403) and outages (503)
# stay HTTP answers, as at the gate.
_NOT_TAKEN = (Conflict, Unprocessable, NotFound)


@dataclass(frozen=True, slots=True)
class NhsaPorts:
    gate: GatePorts
    drugs: TtlCache[str, int]  # pack sizes by med_list_codg, seconds stale at most
    # The catalogue, institution names and 3513's reads: each in a session of its own
    # (autocommit), so none holds a connection while the gate waits on Kafka.
    reads: async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Answered:
    """The reply envelope, and the infno it answers for the metrics ("unknown" for a message
    not read that far: a label is never the message's own text)."""

    infno: str
    reply: dict[str, Any]


async def answer(
    body: bytes, caller: Caller, ports: NhsaPorts, received: dt.datetime
) -> Answered:
    """The reply envelope; raises only what the gate's route would (403, 503)."""
    try:
        envelope = mapping.read_envelope(_json(body))
    except MessageRefused as exc:
        return Answered("unknown", reply(received, None, exc.message))
    authorize(envelope, caller)
    infno = envelope.infno.value
    try:
        output = await _HANDLERS[envelope.infno](envelope, caller, ports)
    except MessageRefused as exc:
        return Answered(infno, reply(received, None, exc.message))
    return Answered(infno, reply(received, output, None))


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageRefused(f"the message is not JSON (UTF-8): {exc}") from None


def authorize(envelope: Envelope, caller: Caller) -> None:
    """As the gate: a pos key acts for its own institution only; admin for any; a regulator
    reads (3513) and nothing else."""
    if envelope.infno is Infno.QUERY:
        auth.require_role(caller, Role.POS, Role.REGULATOR, Role.ADMIN)
    else:
        auth.require_role(caller, Role.POS, Role.ADMIN)
    auth.require_institution(caller, envelope.fixmedins_code)


def reply(received: dt.datetime, output: Output | None, refused: str | None) -> dict[str, Any]:
    return {"infcode": -1 if refused is not None else 0,
            "inf_refmsgid": f"TG{_stamp(received)}{secrets.token_hex(4).upper()}",
            "refmsg_time": _stamp(received), "respond_time": _stamp(utcnow()),
            "err_msg": refused, "output": output or {}}


def _stamp(moment: dt.datetime) -> str:
    """The platform's message times: yyyyMMddHHmmssSSS, Asia/Shanghai."""
    return moment.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S%f")[:17]


# --- sales (3505, 3505A) -------------------------------------------------------------------


async def _sales(envelope: Envelope, caller: Caller, ports: NhsaPorts) -> Output:
    sales = await read_sales(envelope, ports)
    answers = await _settle_each([mapping.settlement(sale) for sale in sales], ports)
    taken = [a for a in answers if not isinstance(a, AppError)]
    if not taken:
        raise MessageRefused("; ".join(f"[{a.code}] {a.message}" for a in answers
                                       if isinstance(a, AppError)))
    names = await _names(ports.reads, wording.first_payers(answers))
    result = wording.sale_result(list(zip(sales, answers, strict=True)), names)
    if envelope.infno is Infno.SALE:
        return {"result": result, "decision": taken[0]}
    return {"result": result, "decisions": taken}


async def read_sales(envelope: Envelope, ports: NhsaPorts) -> list[Sale]:
    """Every settlement of the message, or MessageRefused for the first row that cannot be
    read: over HTTP a message is taken whole or not at all."""
    groups = mapping.sale_groups(envelope)
    refused = [group.refusal for group in groups if group.refusal is not None]
    if refused:
        raise MessageRefused("; ".join(refused))
    pack_sizes = await _pack_sizes(ports, mapping.split_drugs(groups))
    return [mapping.to_sale(envelope.fixmedins_code, group, pack_sizes) for group in groups]


async def _pack_sizes(ports: NhsaPorts, wanted: set[str]) -> dict[str, int]:
    """Of the split rows' drugs: the cache first, then one query."""
    if not wanted:
        return {}
    async with ports.reads() as session:
        return await drugs.pack_sizes(session, ports.drugs, wanted)


async def _settle_each(
    settlements: Sequence[Settlement], ports: NhsaPorts
) -> list[dict[str, Any] | AppError]:
    """In the message's order, each the gate's answer as JSON (the words need its fields). A
    settlement the gate will not take (409: the same id with another body) is reported in
    words beside the others."""
    answers: list[dict[str, Any] | AppError] = []
    for settlement in settlements:
        try:
            given = await gate.settle(settlement, ports.gate)
        except _NOT_TAKEN as exc:
            answers.append(exc)
        else:
            answers.append(orjson.loads(given.body))
    return answers


async def _names(
    reads: async_sessionmaker[AsyncSession], institution_ids: set[str]
) -> dict[str, str]:
    """Names of the institutions that paid first, for the cashier (only when there are any)."""
    if not institution_ids:
        return {}
    async with reads() as session:
        rows = await institutions_repository.get_many(session, institution_ids)
    return {row.institution_id: row.name for row in rows}


# --- returns (3506) ------------------------------------------------------------------------


async def _return(envelope: Envelope, caller: Caller, ports: NhsaPorts) -> Output:
    request = mapping.return_request(envelope)
    sale = await _recorded_sale(ports.gate, request.sale_ids)
    if sale is None:
        missing = f"未找到原销售记录 {' 或 '.join(request.sale_ids)} [SETTLEMENT_NOT_FOUND]"
        return {"result": wording.return_refused([missing]), "reversal": None}
    lines = mapping.returned_lines(sale.lines, request.codes)
    problems = lines.problems + _time_problems(sale, request)
    if problems:
        return {"result": wording.return_refused(problems), "reversal": None}
    try:
        given = await gate.reverse(sale.settlement_id, mapping.reversal(request, lines),
                                   ports.gate, partial(auth.require_institution, caller),
                                   request.returned_at)
    except _NOT_TAKEN as exc:
        raise MessageRefused(f"[{exc.code}] {exc.message}") from None
    reversal: dict[str, Any] = orjson.loads(given.body)
    return {"result": wording.return_result(reversal), "reversal": reversal}


def _time_problems(sale: SettlementView, request: ReturnRequest) -> list[str]:
    """The return is recorded at its sel_retn_time, which cannot be before its sale."""
    if request.returned_at >= sale.settled_at:
        return []
    return [f"退货时间 {local_text(request.returned_at)} 早于原销售时间 "
            f"{local_text(sale.settled_at)}（北京时间） [RETURN_BEFORE_SALE]"]


async def _recorded_sale(ports: GatePorts, sale_ids: Sequence[str]) -> SettlementView | None:
    """The sale a return names: recorded under its 3505 id, else under its 3505A receipt."""
    for sale_id in sale_ids:
        view = await gate.find_settlement(ports, sale_id)
        if view is not None:
            return view
    return None


# --- the sales query (3513) ----------------------------------------------------------------


async def _query(envelope: Envelope, caller: Caller, ports: NhsaPorts) -> Output:
    own = caller.institution_id if caller.role is Role.POS else None
    query = mapping.sales_query(envelope, own)
    if query.institution_id is not None:
        auth.require_institution(caller, query.institution_id)
    async with ports.reads() as session:
        events = await _sale_events(session, query)
    return {"data": [_data_row(event) for event in events]}


async def _sale_events(session: AsyncSession, query: SalesQuery) -> list[SaleEvent]:
    if query.code is None:
        institution, since, until = query.institution_range(mapping.QUERY_SPAN_MAX)
        return await repository.institution_sales(session, institution, since, until,
                                                  query.page_size, query.offset)
    events = await repository.code_events(session, query.code, query.institution_id,
                                          query.since)
    sales = code_sales(events, query.until)
    return sales[query.offset:query.offset + query.page_size]


def code_sales(events: Sequence[Any], until: dt.datetime | None) -> list[SaleEvent]:
    """One code's payments before `until` (the lower bound is the query's), each followed by
    the reversals of its line, in the order of the institution query."""
    sales = {(e.settlement_id, e.line_no): e.event_at for e in events
             if e.type == "payment" and (until is None or e.event_at < until)}
    found = [
        SaleEvent(e.code, e.institution_id, e.settlement_id, e.line_no,
                  "sale" if e.type == "payment" else "return",
                  abs(e.units) if e.units is not None else None, e.event_at,
                  sales[(e.settlement_id, e.line_no)])
        for e in events if (e.settlement_id, e.line_no) in sales
    ]
    return sorted(found, key=lambda event: event.order)


def _data_row(event: SaleEvent) -> dict[str, Any]:
    return {"drug_trac_codg": event.code, "fixmedins_code": event.institution_id,
            "settlement_id": event.settlement_id, "type": event.type,
            "trdn_flag": "0" if event.units is None else "1",
            "sel_retn_cnt": 1 if event.units is None else event.units,
            "sel_retn_time": local_text(event.at)}


_HANDLERS: dict[Infno, Callable[[Envelope, Caller, NhsaPorts], Awaitable[Output]]] = {
    Infno.SALE: _sales, Infno.SALES: _sales, Infno.RETURN: _return, Infno.QUERY: _query,
}
