"""A settlement as the record keeps it: what the gate or the consumer decided, every payment
and claim it makes, every flag it raises. The gate ships this inside its Kafka event so the
consumer records the gate's decision without judging it again."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from service.decisions.schemas import Payment


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A first payment (whole pack) or units sold from an opened pack (split)."""

    code: str
    line_no: int
    units: int | None = None
    pack_size: int | None = None


@dataclass(slots=True)
class SettlementRecord:
    settlement_id: str
    institution_id: str
    settled_at: dt.datetime
    patient_ref: str | None
    source: str
    body_hash: bytes
    enforced: bool
    lines: list[dict[str, Any]]
    answer: dict[str, Any]
    payments: list[Payment] = field(default_factory=list)
    claims: list[ClaimRow] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return str(self.answer["decision"])

    def effects_json(self) -> dict[str, Any]:
        return {
            "body_hash": self.body_hash.hex(),
            "lines": self.lines,
            "payments": [[p.canonical, p.line_no, p.units, p.duplicate] for p in self.payments],
            "claims": [[c.code, c.line_no, c.units, c.pack_size] for c in self.claims],
            "flags": self.flags,
        }

    @classmethod
    def from_gate_event(
        cls, event: dict[str, Any], settled_at: dt.datetime
    ) -> SettlementRecord:
        effects = event["effects"]
        return cls(
            settlement_id=event["settlement_id"], institution_id=event["institution_id"],
            settled_at=settled_at, patient_ref=event.get("patient_ref"), source="gate",
            body_hash=bytes.fromhex(effects["body_hash"]), enforced=event["decision"]["enforced"],
            lines=effects["lines"], answer=event["decision"],
            payments=[Payment(c, n, u, d) for c, n, u, d in effects["payments"]],
            claims=[ClaimRow(c, n, u, s) for c, n, u, s in effects["claims"]],
            flags=effects["flags"],
        )


@dataclass(frozen=True, slots=True)
class SettlementView:
    """What a reversal (or a replay) needs of a settlement, from the record or recent answers."""

    settlement_id: str
    institution_id: str
    patient_ref: str | None
    body_hash: bytes
    lines: list[dict[str, Any]]
    answer: dict[str, Any]
