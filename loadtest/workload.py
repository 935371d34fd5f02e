"""A seeded, realistic settlement workload and its ground truth.

Institutions of every kind (some with a go-live override), a drug catalogue, settlements of 1-6
lines (whole and split packs), ~2 % re-used codes across and within institutions, reversals,
missing, invalid and mismatched codes, and redeliveries (the same event produced twice).

Kafka orders events only within a partition, so a settlement that re-uses, re-opens or reverses
an earlier settlement's codes is pinned to that settlement's partition (produced with an
explicit partition; the key stays the settlement_id). Every chain of related events is then
in one partition, in production order, and the expected flags below are exact whatever the
interleaving of partitions.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.producer import Row
from loadtest.truth import Truth, simulate

KINDS = ("retail_pharmacy", "primary", "secondary", "tertiary")
PACK_SIZES = (10, 12, 20, 24, 30, 100)
_SHANGHAI = dt.timezone(dt.timedelta(hours=8))
_START = dt.datetime(2025, 3, 15, tzinfo=_SHANGHAI)
_SPAN_S = 120 * 86_400  # settlements spread over four months around the go-live dates


@dataclass(frozen=True, slots=True)
class Institution:
    institution_id: str
    kind: str
    go_live_override: dt.date | None


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str  # cn20 digits 1-7
    drug_code: str
    pack_size: int


@dataclass(frozen=True, slots=True)
class Event:
    partition: int
    key: str
    body: dict[str, Any]
    codes: int  # trace codes carried (0 for a reversal)

    def value(self) -> bytes:
        return orjson.dumps(self.body)

    def row(self) -> Row:
        """The event as the producer process reads it."""
        return (self.partition, self.key.encode(), self.value(), self.codes)


@dataclass
class Workload:
    seed: int
    partitions: int
    institutions: list[Institution]
    events: list[Event]
    truth: Truth

    @property
    def codes(self) -> int:
        return sum(event.codes for event in self.events)


@dataclass
class _Paid:
    """What a later settlement may re-use of an earlier one."""

    settlement_id: str
    institution_id: str
    partition: int
    whole_codes: list[str]
    split_packs: list[tuple[str, Product]]


@dataclass
class _Generator:
    rng: random.Random
    partitions: int
    institutions: list[Institution]
    products: list[Product]
    serial: int = 0
    number: int = 0
    events: list[Event] = field(default_factory=list)
    recent: list[_Paid] = field(default_factory=list)

    def code(self, product: Product) -> str:
        self.serial += 1
        return f"{product.product_id}{self.serial:013d}"

    def settlement_id(self) -> str:
        self.number += 1
        return f"S-LT-{self.number:09d}"


def generate(settlements: int, *, seed: int = 42, partitions: int = 6) -> Workload:
    rng = random.Random(seed)
    gen = _Generator(rng, partitions, _institutions(rng), _catalogue(rng))
    for _ in range(settlements):
        _one_settlement(gen)
    _redeliver(gen)
    truth = simulate(gen.institutions, [event.body for event in gen.events])
    return Workload(seed, partitions, gen.institutions, gen.events, truth)


def _institutions(rng: random.Random, count: int = 240) -> list[Institution]:
    out = []
    for index in range(count):
        kind = rng.choices(KINDS, weights=(60, 25, 10, 5))[0]
        # A few institutions go live late by their own override (CONTRACT §2).
        override = dt.date(2025, 7, 1) if rng.random() < 0.05 else None
        out.append(Institution(f"H{index:011d}", kind, override))
    return out


def _catalogue(rng: random.Random, count: int = 400) -> list[Product]:
    ids = rng.sample(range(100_000, 999_999), count)
    return [
        Product(f"8{pid:06d}", f"XC{pid:06d}A001010100{pid % 1000:03d}", rng.choice(PACK_SIZES))
        for pid in ids
    ]


def _one_settlement(gen: _Generator) -> None:
    rng = gen.rng
    sid = gen.settlement_id()
    source = rng.choice(gen.recent) if gen.recent and rng.random() < 0.08 else None
    institution = _institution_for(gen, source)
    partition = source.partition if source else zlib.crc32(sid.encode()) % gen.partitions
    paid = _Paid(sid, institution.institution_id, partition, [], [])
    lines = _lines(gen, paid, source)
    body = {
        "type": "settlement", "source": "stream", "settlement_id": sid,
        "institution_id": institution.institution_id, "settled_at": _settled_at(rng),
        "patient_id": f"psn-{rng.randrange(1_000_000):06d}", "lines": lines,
    }
    codes = sum(len(line["trace_codes"]) for line in lines)
    gen.events.append(Event(partition, sid, body, codes))
    _remember(gen, paid)
    if rng.random() < 0.005:
        _reversal(gen, paid)


def _institution_for(gen: _Generator, source: _Paid | None) -> Institution:
    """A re-use happens at the same institution about a third of the time (severity medium)."""
    if source is not None and gen.rng.random() < 0.35:
        return next(i for i in gen.institutions if i.institution_id == source.institution_id)
    return gen.rng.choice(gen.institutions)


def _settled_at(rng: random.Random) -> str:
    at = _START + dt.timedelta(seconds=rng.randrange(_SPAN_S))
    return at.isoformat()


def _remember(gen: _Generator, paid: _Paid) -> None:
    """A bounded window of recent settlements: re-use is mostly of recent sales."""
    gen.recent.append(paid)
    if len(gen.recent) > 5000:
        del gen.recent[: len(gen.recent) - 5000]


def _lines(gen: _Generator, paid: _Paid, source: _Paid | None) -> list[dict[str, Any]]:
    count = gen.rng.choices(range(1, 7), weights=(30, 25, 20, 12, 8, 5))[0]
    lines = [_line(gen, number, paid) for number in range(1, count + 1)]
    if source is not None:
        lines.append(_reuse_line(gen, len(lines) + 1, source))
    return lines


def _line(gen: _Generator, line_no: int, paid: _Paid) -> dict[str, Any]:
    roll = gen.rng.random()
    product = gen.rng.choice(gen.products)
    if roll < 0.13:
        return _split_line(gen, line_no, product, paid)
    if roll < 0.16:
        return _no_code_line(line_no, product, "herbal_pieces")
    if roll < 0.175:
        return _no_code_line(line_no, product, None)
    if roll < 0.185:
        return _line_body(line_no, product, 1, [f"7{gen.rng.randrange(10**19):019d}"])
    if roll < 0.195:  # two packs sold, one code scanned
        return _line_body(line_no, product, 2, [gen.code(product)])
    return _whole_line(gen, line_no, product, paid)


def _line_body(line_no: int, product: Product, quantity: int, codes: list[str]) -> dict[str, Any]:
    return {"line_no": line_no, "drug_code": product.drug_code, "quantity": quantity,
            "split": False, "trace_codes": codes}


def _whole_line(gen: _Generator, line_no: int, product: Product, paid: _Paid) -> dict[str, Any]:
    quantity = gen.rng.choices((1, 2, 3), weights=(70, 20, 10))[0]
    codes = [gen.code(product) for _ in range(quantity)]
    if quantity >= 2 and gen.rng.random() < 0.03:
        codes[-1] = codes[0]  # the same pack scanned twice in one settlement
    paid.whole_codes += codes
    return _line_body(line_no, product, quantity, codes)


def _split_line(gen: _Generator, line_no: int, product: Product, paid: _Paid) -> dict[str, Any]:
    code = gen.code(product)
    paid.split_packs.append((code, product))
    units = gen.rng.randint(1, max(1, product.pack_size // 3))
    return _split_body(line_no, product, units, code)


def _split_body(line_no: int, product: Product, units: int, code: str) -> dict[str, Any]:
    return {"line_no": line_no, "drug_code": product.drug_code, "quantity": units,
            "split": True, "pack_size": product.pack_size, "trace_codes": [code]}


def _no_code_line(line_no: int, product: Product, reason: str | None) -> dict[str, Any]:
    line = _line_body(line_no, product, 1, [])
    if reason is not None:
        line["no_code_reason"] = reason
    return line


def _reuse_line(gen: _Generator, line_no: int, source: _Paid) -> dict[str, Any]:
    """A code of an earlier settlement sold again: a resold whole pack, or more units from an
    opened pack (fine at the same institution until the pack is used up)."""
    product = gen.products[0]
    if source.split_packs and gen.rng.random() < 0.5:
        code, product = gen.rng.choice(source.split_packs)
        units = gen.rng.randint(1, product.pack_size)
        return _split_body(line_no, product, units, code)
    if source.whole_codes:
        return _line_body(line_no, product, 1, [gen.rng.choice(source.whole_codes)])
    return _whole_line(gen, line_no, product, _Paid("", "", 0, [], []))


def _reversal(gen: _Generator, paid: _Paid) -> None:
    """Reverse the whole settlement, then sell one of its packs again: no flag is due."""
    rid = f"R-{paid.settlement_id}"
    body = {"type": "reversal", "source": "stream", "settlement_id": paid.settlement_id,
            "reversal_id": rid}
    gen.events.append(Event(paid.partition, paid.settlement_id, body, 0))
    gen.recent.append(_Paid(paid.settlement_id, paid.institution_id, paid.partition,
                            paid.whole_codes, []))


def _redeliver(gen: _Generator) -> None:
    """About 1 % of events are produced a second time, later, on the same partition."""
    count = len(gen.events) // 100
    picks = sorted(gen.rng.sample(range(len(gen.events)), count), reverse=True)
    for index in picks:
        later = gen.rng.randint(index + 1, len(gen.events))
        gen.events.insert(later, gen.events[index])
