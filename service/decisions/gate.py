"""The gate (POST /v1/settlements) and its reversal: decide, claim, send on to the record and
only then answer. If Kafka does not acknowledge, every claim is given back and the answer is
503: a settlement the record will never see must not hold a code."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession

from service.decisions.schemas import ClaimChange, SettlementIn, Source
from service.decisions.service import Candidate, body_hash, decide_and_claim, release
from service.firstseen.store import FirstSeenStore
from service.institutions.schemas import InstitutionRef
from service.institutions.service import get_for_settlement
from service.kit.clock import utcnow
from service.kit.errors import Conflict, Unavailable
from service.kit.kafka import PublishFailed, publish_json
from service.kit.keyed_hash import keyed_hex
from service.kit.ttl_cache import TtlCache
from service.policy.schemas import PolicyConfig
from service.records import reversals
from service.records.recent import RecentAnswers
from service.records.reversals import ReversalIn, SettlementNotFound
from service.records.schemas import SettlementRecord, SettlementView
from service.settings import Settings


class SettlementConflict(Conflict):
    code = "SETTLEMENT_CONFLICT"


class RecordUnavailable(Unavailable):
    code = "RECORD_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class GatePorts:
    """What the gate talks to, handed in by the route's dependencies."""

    session: AsyncSession
    lookups: asyncpg.Pool  # reads of committed rows, past the session (see open_lookup_pool)
    store: FirstSeenStore
    recent: RecentAnswers
    producer: AIOKafkaProducer
    settings: Settings
    institutions: TtlCache[str, InstitutionRef]


async def settle(request: SettlementIn, ports: GatePorts) -> dict[str, Any]:
    digest = body_hash(request)
    prior = await reversals.find_settlement(ports.lookups, ports.recent, request.settlement_id)
    if prior is not None:
        return _replay(prior, digest)
    institution = await ports.institutions.get_or_load(
        request.institution_id, partial(get_for_settlement, ports.session, request.institution_id)
    )
    candidate = Candidate(request, institution, Source.GATE, digest,
                          patient_ref(ports.settings, request.patient_id), utcnow())
    policy = PolicyConfig.from_settings(ports.settings)
    [decided] = await decide_and_claim([candidate], ports.store, ports.session, policy)
    record = decided.record
    attempt = uuid.uuid4().hex
    try:
        await _send(ports, request.settlement_id, _settlement_event(request, record, attempt))
    except PublishFailed as exc:
        await _give_up(ports, request.settlement_id, attempt, decided.changes)
        raise RecordUnavailable(f"the record cannot take settlements now ({exc})") from exc
    await ports.recent.put_settlement(request.settlement_id, _recent(record))
    return record.answer


def patient_ref(settings: Settings, patient_id: str | None) -> str | None:
    """Patients are stored and shown only as a keyed hash; the raw id goes nowhere."""
    if patient_id is None:
        return None
    return keyed_hex(settings.patient_hash_key.get_secret_value(), patient_id)


def _replay(prior: SettlementView, digest: bytes) -> dict[str, Any]:
    if prior.body_hash != digest:
        raise SettlementConflict(
            f"settlement {prior.settlement_id} was already decided with another body; "
            "a new attempt needs a new settlement_id"
        )
    return {**prior.answer, "replayed": True}


async def _give_up(
    ports: GatePorts, settlement_id: str, attempt: str, changes: list[ClaimChange]
) -> None:
    """Kafka did not acknowledge in time, yet the produce may still land: void the attempt
    first (the consumers skip it), then give its claims back."""
    try:
        await ports.recent.void_attempt(settlement_id, attempt)
    finally:
        await release(ports.store, changes)


def _settlement_event(
    request: SettlementIn, record: SettlementRecord, attempt: str
) -> dict[str, Any]:
    body = request.model_dump(mode="json", exclude={"patient_id"})
    return {"type": "settlement", **body, "patient_ref": record.patient_ref, "source": "gate",
            "attempt": attempt, "decision": record.answer, "effects": record.effects_json()}


def _recent(record: SettlementRecord) -> dict[str, Any]:
    return {"institution_id": record.institution_id, "patient_ref": record.patient_ref,
            "body_hash": record.body_hash.hex(), "lines": record.lines,
            "answer": record.answer}


async def _send(ports: GatePorts, key: str, event: dict[str, Any]) -> None:
    settings = ports.settings
    await publish_json(ports.producer, settings.topic_settlements, key, event,
                       settings.gate_publish_timeout_s)


async def reverse(
    settlement_id: str, request: ReversalIn, ports: GatePorts,
    may_act_for: Callable[[str], None],
) -> dict[str, Any]:
    """`may_act_for(institution_id)` raises if the caller may not reverse there."""
    view = await reversals.find_settlement(ports.lookups, ports.recent, settlement_id)
    if view is None:
        raise SettlementNotFound(f"settlement {settlement_id} is not recorded")
    may_act_for(view.institution_id)
    prior = await reversals.find_reversal(ports.session, ports.recent, request.reversal_id)
    if prior is not None:
        return reversals.replay_or_conflict(prior, settlement_id, request)
    lines = await reversals.lines_to_reverse(ports.session, ports.recent, view, request.line_nos)
    changes = await reversals.release_in_store(ports.store, view, lines)
    released = [[c.canonical, c.line_no, -c.units if c.units else None] for c in changes]
    answer = reversals.reversal_answer(settlement_id, request.reversal_id, released)
    event = _reversal_event(settlement_id, request, released, answer, utcnow())
    try:
        await _send(ports, settlement_id, event)
    except PublishFailed as exc:
        await release(ports.store, changes)
        raise RecordUnavailable(f"the record cannot take reversals now ({exc})") from exc
    await ports.recent.put_reversal(request.reversal_id, {
        "settlement_id": settlement_id, "line_nos": request.line_nos, "answer": answer})
    return answer


def _reversal_event(
    settlement_id: str, request: ReversalIn, released: list[list[Any]],
    answer: dict[str, Any], at: dt.datetime,
) -> dict[str, Any]:
    return {"type": "reversal", "settlement_id": settlement_id,
            "reversal_id": request.reversal_id, "line_nos": request.line_nos,
            "source": "gate", "reversed_at": at.isoformat(),
            "effects": {"released": released, "answer": answer}}
