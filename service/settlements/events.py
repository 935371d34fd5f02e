"""The settlements topic (CONTRACT §5), typed: one schema the gate encodes and the consumers
decode (msgspec, once). A gate event carries the gate's decision and effects, so the record is
written without judging the settlement again; the JSON fragments the record keeps as they are
(`decision`, the recorded lines) stay raw bytes end to end."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from service.claims.schemas import Payment
from service.decisions.checks import InvalidSettlement, check_settlement
from service.decisions.schemas import Identifier, Settlement
from service.flags.schemas import FlagRecord
from service.kit.validation import describe
from service.records.schemas import ClaimRow


class Incoming(msgspec.Struct, frozen=True, gc=False):
    """A record of the settlements topic as a consumer fetched it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


class GateEffects(msgspec.Struct, frozen=True, gc=False):
    """What the gate's decision does, for the record: it is not decided again."""

    body_hash: str  # hex of the settlement's body hash
    enforced: bool
    outcome: str
    lines: msgspec.Raw  # the recorded lines (records.schemas.RecordedLine), as JSON
    payments: list[Payment]
    claims: list[ClaimRow]
    flags: list[FlagRecord]


class SettlementEvent(Settlement, frozen=True, gc=False, tag="settlement", tag_field="type",
                      omit_defaults=True):
    """A settlement on the topic: from the gate (`source: gate`, with its decision) or from
    the insurer's platform and uploads (no source, or `stream`), decided by a consumer."""

    source: str | None = None
    patient_ref: str | None = None  # the gate sends the keyed hash, never the patient id
    attempt: str | None = None  # the gate's attempt; one it answered 503 for is voided
    decision: msgspec.Raw = msgspec.Raw()  # the gate's answer (empty: none)
    effects: GateEffects | None = None

    @property
    def from_gate(self) -> bool:
        return self.source == "gate"


class ReversalEffects(msgspec.Struct, frozen=True, gc=False):
    released: list[tuple[str, int, int | None]]  # [code, line_no, units]
    answer: msgspec.Raw


class ReversalEvent(msgspec.Struct, frozen=True, gc=False, tag="reversal", tag_field="type"):
    settlement_id: Identifier
    reversal_id: Identifier
    line_nos: Annotated[list[int], Meta(max_length=200)] | None = None
    source: str | None = None
    reversed_at: Annotated[str, Meta(max_length=64)] | None = None
    effects: ReversalEffects | None = None

    @property
    def from_gate(self) -> bool:
        return self.source == "gate" and self.effects is not None


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    record: Incoming
    error: str

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "topic": self.record.topic,
                                "partition": self.record.partition,
                                "offset": self.record.offset}
        try:
            body["raw"] = self.record.value.decode("utf-8")
        except UnicodeDecodeError:
            body["raw_b64"] = base64.b64encode(self.record.value).decode()
        return body


TopicEvent = SettlementEvent | ReversalEvent
_DECODER = msgspec.json.Decoder(TopicEvent)
_ENCODER = msgspec.json.Encoder()


def decode(record: Incoming) -> tuple[Incoming, TopicEvent] | DeadLetter:
    """A typed event, or the reason it cannot be taken (never an exception: the consumer
    dead-letters it and carries on)."""
    if b"\\u0000" in record.value:  # valid JSON, but PostgreSQL text cannot hold NUL
        return DeadLetter(record, "event contains a NUL character (\\u0000)")
    try:
        event = _DECODER.decode(record.value)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return DeadLetter(record, _why(exc))
    problem = _problem(event)
    return DeadLetter(record, problem) if problem else (record, event)


def _why(exc: msgspec.ValidationError | msgspec.DecodeError) -> str:
    if not isinstance(exc, msgspec.ValidationError):
        return f"not JSON (UTF-8): {exc}"
    text = describe(exc)
    if text.startswith("body: must be an object"):
        return "event must be a JSON object" + text.removeprefix("body: must be an object")
    if text.startswith("type:"):
        wrong = text.removeprefix("type: ").removesuffix(" is not one of the accepted values")
        shown = "" if wrong == "is required" else f", not {wrong}"
        return f"type must be 'settlement' or 'reversal'{shown}"
    return text


def _problem(event: TopicEvent) -> str | None:
    if isinstance(event, ReversalEvent):
        return None
    try:
        check_settlement(event)
    except InvalidSettlement as exc:
        return exc.message
    if event.from_gate and (event.effects is None or not event.decision):
        return "a gate settlement must carry its decision and effects"
    return None


def encode(event: TopicEvent) -> bytes:
    return _ENCODER.encode(event)
