"""Decoding settlement-topic events. Anything that cannot be decoded becomes a DeadLetter with
its reason, never an exception that would stop the consumer."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, Field, ValidationError

from service.decisions.schemas import Identifier, SettlementIn
from service.policy.service import parse_settled_at
from service.records.reversals import ReversalEventFields
from service.records.schemas import SettlementRecord


class ReversalEvent(BaseModel):
    settlement_id: Identifier
    reversal_id: Identifier
    line_nos: list[int] | None = Field(default=None, max_length=200)
    source: str | None = None
    reversed_at: str | None = Field(default=None, max_length=64)
    effects: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SettlementEvent:
    record: ConsumerRecord[bytes, bytes]
    settlement: SettlementIn
    gate_record: SettlementRecord | None  # the gate's decision, for events the gate sent
    attempt: str | None = None  # the gate's attempt id (a 503'd attempt is voided)

    @property
    def from_gate(self) -> bool:
        return self.gate_record is not None


@dataclass(frozen=True, slots=True)
class ReversalEventIn:
    record: ConsumerRecord[bytes, bytes]
    reversal: ReversalEvent

    @property
    def fields(self) -> ReversalEventFields:
        """The reversal's time is the gate's, or for a stream event the Kafka timestamp: both
        are the same on every redelivery, so the history row is written once."""
        event = self.reversal
        at = (
            parse_settled_at(event.reversed_at) if event.reversed_at
            else dt.datetime.fromtimestamp(self.record.timestamp / 1000, dt.UTC)
        )
        return ReversalEventFields(event.settlement_id, event.reversal_id, event.line_nos,
                                   event.source, at, event.effects)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: ConsumerRecord[bytes, bytes]
    error: str

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": self.error, "topic": self.record.topic,
            "partition": self.record.partition, "offset": self.record.offset,
        }
        value = self.record.value or b""
        try:
            body["raw"] = value.decode("utf-8")
        except UnicodeDecodeError:
            body["raw_b64"] = base64.b64encode(value).decode()
        return body


Event = SettlementEvent | ReversalEventIn | DeadLetter


def decode(record: ConsumerRecord[bytes, bytes]) -> Event:
    value = record.value or b""
    if b"\\u0000" in value:  # valid JSON, but PostgreSQL text cannot hold NUL
        return DeadLetter(record, "event contains a NUL character (\\u0000)")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(record, f"not JSON (UTF-8): {exc}")
    if not isinstance(body, dict):
        return DeadLetter(record, "event must be a JSON object")
    try:
        return _typed(record, body)
    except ValidationError as exc:
        return DeadLetter(record, _validation_message(exc))


def _typed(record: ConsumerRecord[bytes, bytes], body: dict[str, Any]) -> Event:
    kind = body.get("type")
    if kind == "settlement":
        settlement = SettlementIn.model_validate(body)
        if body.get("source") != "gate":
            return SettlementEvent(record, settlement, None)
        gate_record = _gate_record(body, settlement)
        if gate_record is None:
            return DeadLetter(record, "a gate settlement must carry its decision and effects")
        attempt = body.get("attempt")
        return SettlementEvent(record, settlement, gate_record,
                               attempt if isinstance(attempt, str) else None)
    if kind == "reversal":
        return ReversalEventIn(record, ReversalEvent.model_validate(body))
    return DeadLetter(record, f"type must be 'settlement' or 'reversal', not {kind!r}")


def _gate_record(body: dict[str, Any], settlement: SettlementIn) -> SettlementRecord | None:
    """The gate's decision as the record keeps it; None if the event does not carry one whole
    (it is then dead-lettered, not retried for ever)."""
    try:
        return SettlementRecord.from_gate_event(body, settlement.settled_at_instant)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:10]
    )
