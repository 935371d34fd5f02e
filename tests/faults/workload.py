"""A settlement stream whose outcome is known before it is consumed.

Streamed settlements (`"source": "stream"`) of whole-pack lines with fresh cn20 codes, plus:
- lines re-using a code an earlier settlement paid: each is refused and flagged
  `duplicate_payment` exactly once, naming the earlier settlement as the first payment
  (severity `medium` at the same institution, `high` across institutions);
- lines without a code: refused and flagged `missing_code` (severity `low`);
- events produced a second time, at once or long after: they change nothing.
Every settlement is settled after every go-live (enforced), under the default policy.

Kafka orders events only within a partition, so a settlement re-using a code goes to the
partition of the settlement that paid it, and only once the broker acknowledged that
settlement (it is in an earlier chunk, and the feeder awaits each chunk before sending the
next): the first payment comes first in every consumer's order, whatever crashes, resends and
redeliveries happen. The gate's own settlements can be added to the truth as a test makes them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

FlagKey = tuple[str, str, int, str | None]  # kind, settlement_id, line_no, trace_code

KINDS = ("retail_pharmacy", "primary", "secondary", "tertiary")
DRUG_CODE = "XC09AAL012A001010100543"
REUSE_RATE = 0.04  # settlements that add a line re-using an earlier settlement's code
MISSING_RATE = 0.015  # lines without any trace code
REDELIVERY_RATE = 0.03  # events produced a second time
CHUNK_EVENTS = 200  # events the feeder sends before it waits for the broker's acks
_REUSE_WINDOW = 20_000  # codes a re-use may pick from: the most recently acknowledged


@dataclass(frozen=True, slots=True)
class ExpectedFlag:
    severity: str
    first_payment: str | None  # the settlement id of the code's first payment


@dataclass(frozen=True, slots=True)
class StreamEvent:
    partition: int
    key: bytes
    value: bytes
    codes: int  # trace codes the event carries


@dataclass
class GroundTruth:
    """What the record must hold once every event of the run is consumed."""

    prefix: str  # every settlement id of the run starts with it
    settlements: dict[str, str] = field(default_factory=dict)  # settlement_id -> institution
    owners: dict[str, tuple[str, int]] = field(default_factory=dict)  # code -> its payment
    flags: dict[FlagKey, ExpectedFlag] = field(default_factory=dict)
    payments: Counter[str] = field(default_factory=Counter)  # payments per institution
    refused: set[str] = field(default_factory=set)  # the gate answered 503: never recorded

    def pay(self, settlement_id: str, institution: str, line_no: int, codes: Sequence[str]) -> None:
        self.settlements[settlement_id] = institution
        for code in codes:
            self.owners[code] = (settlement_id, line_no)
        self.payments[institution] += len(codes)

    def refuse_reuse(self, settlement_id: str, institution: str, line_no: int, code: str) -> None:
        """A line re-using `code`, paid before by its owner: one flag, nothing paid."""
        self.settlements[settlement_id] = institution
        owner = self.owners[code][0]
        severity = "medium" if self.settlements[owner] == institution else "high"
        self.flags[("duplicate_payment", settlement_id, line_no, code)] = ExpectedFlag(
            severity, owner)

    def refuse_missing(self, settlement_id: str, institution: str, line_no: int) -> None:
        self.settlements[settlement_id] = institution
        self.flags[("missing_code", settlement_id, line_no, None)] = ExpectedFlag("low", None)


@dataclass
class Workload:
    run: int
    institutions: list[str]
    chunks: list[list[StreamEvent]]
    truth: GroundTruth
    codes: int = 0  # fresh codes paid by the stream
    reused: int = 0
    missing: int = 0
    redelivered: int = 0

    @property
    def events(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def code(self, serial: int) -> str:
        """Codes of the gate's own settlements: never produced by the stream."""
        return f"8{self.run:06d}9{serial:012d}"

    def figures(self) -> dict[str, int]:
        return {"events": self.events, "settlements": len(self.truth.settlements),
                "codes": self.codes, "reused_codes": self.reused,
                "missing_code_lines": self.missing, "redelivered_events": self.redelivered,
                "expected_flags": len(self.truth.flags)}


def institution_ids(run: int, count: int) -> list[str]:
    return [f"F{run:06d}{number:05d}" for number in range(count)]


def settlement_prefix(run: int) -> str:
    return f"FT-{run:06d}-"


@dataclass(frozen=True, slots=True)
class _Paid:
    code: str
    settlement_id: str
    institution: str
    partition: int


@dataclass
class _Builder:
    rng: random.Random
    workload: Workload
    partitions: int
    chunk: list[StreamEvent] = field(default_factory=list)
    sent: list[StreamEvent] = field(default_factory=list)
    acked: list[_Paid] = field(default_factory=list)  # paid in chunks already closed
    pending: list[_Paid] = field(default_factory=list)  # paid in the open chunk
    number: int = 0

    def settlement(self) -> None:
        rng, truth, run = self.rng, self.workload.truth, self.workload.run
        self.number += 1
        sid = f"{truth.prefix}{self.number:07d}"
        source = rng.choice(self.acked) if self.acked and rng.random() < REUSE_RATE else None
        if source is not None and rng.random() < 1 / 3:
            institution = source.institution
        else:
            institution = rng.choice(self.workload.institutions)
        partition = source.partition if source else rng.randrange(self.partitions)
        truth.settlements[sid] = institution
        lines = []
        for line_no in range(1, rng.choices((1, 2, 3), weights=(50, 35, 15))[0] + 1):
            if rng.random() < MISSING_RATE:
                lines.append(_line(line_no, [], quantity=1))
                truth.refuse_missing(sid, institution, line_no)
                self.workload.missing += 1
                continue
            codes = [f"8{run:06d}{self.workload.codes + n:013d}"
                     for n in range(rng.choices((1, 2, 3), weights=(70, 20, 10))[0])]
            self.workload.codes += len(codes)
            lines.append(_line(line_no, codes))
            truth.pay(sid, institution, line_no, codes)
            self.pending += [_Paid(code, sid, institution, partition) for code in codes]
        if source is not None:
            lines.append(_line(len(lines) + 1, [source.code]))
            truth.refuse_reuse(sid, institution, len(lines), source.code)
            self.workload.reused += 1
        body = {"type": "settlement", "source": "stream", "settlement_id": sid,
                "institution_id": institution, "settled_at": _settled_at(rng),
                "patient_id": f"psn-{rng.randrange(10**6):06d}", "lines": lines}
        carried = sum(len(line["trace_codes"]) for line in lines)
        self._emit(StreamEvent(partition, sid.encode(), orjson.dumps(body), carried))
        if rng.random() < REDELIVERY_RATE:
            # The same bytes again, later in the same partition: at once (as a producer's
            # retry does) or long after (as a replay does).
            self._emit(self.sent[-1] if rng.random() < 0.5 else rng.choice(self.sent))
            self.workload.redelivered += 1

    def _emit(self, event: StreamEvent) -> None:
        self.chunk.append(event)
        self.sent.append(event)
        if len(self.chunk) >= CHUNK_EVENTS:
            self.close_chunk()

    def close_chunk(self) -> None:
        if self.chunk:
            self.workload.chunks.append(self.chunk)
        self.chunk = []
        self.acked = [*self.acked, *self.pending][-_REUSE_WINDOW:]
        self.pending = []


def generate(run: int, institutions: Sequence[str], codes: int, partitions: int) -> Workload:
    """A stream carrying at least `codes` fresh codes, deterministic for a given `run`."""
    workload = Workload(run, list(institutions), [], GroundTruth(settlement_prefix(run)))
    builder = _Builder(random.Random(run), workload, partitions)
    while workload.codes < codes:
        builder.settlement()
    builder.close_chunk()
    return workload


def _line(line_no: int, codes: list[str], quantity: int | None = None) -> dict[str, Any]:
    return {"line_no": line_no, "drug_code": DRUG_CODE, "quantity": quantity or len(codes),
            "split": False, "trace_codes": codes}


def _settled_at(rng: random.Random) -> str:
    """In July 2025, after every kind's go-live: every settlement is enforced."""
    return (f"2025-07-{rng.randrange(1, 31):02d} {rng.randrange(24):02d}:"
            f"{rng.randrange(60):02d}:{rng.randrange(60):02d}")
