"""Baseline (d)'s unit of work: one polled batch, decided and recorded in one PostgreSQL
transaction, its flags published and marked, then (by the caller) its offsets committed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from loadtest.baselines.postgres_batched import record, rules
from loadtest.baselines.postgres_batched.rules import Arrival, Claim, Reversal
from service.flags.publisher import publish_flags
from service.flags.schemas import FlagRecord
from service.kit.clock import utcnow
from service.policy.schemas import InstitutionPolicy, PolicyConfig
from service.policy.service import is_enforced
from service.records.repository import add_payment_counts
from service.settings import InstitutionKind, Settings
from service.settlements.events import DeadLetter, Incoming, ReversalEvent, SettlementEvent, decode

Decoded = list[tuple[Incoming, SettlementEvent | ReversalEvent]]


@dataclass
class Ports:
    settings: Settings
    connection: asyncpg.Connection
    producer: AIOKafkaProducer
    policy: PolicyConfig
    institutions: dict[str, InstitutionPolicy] = field(default_factory=dict)


async def process(records: Sequence[ConsumerRecord[bytes, bytes]], ports: Ports) -> None:
    """The whole batch (the caller commits its offsets once this returns)."""
    events, dead = await _decoded(records, ports)
    connection = ports.connection
    async with connection.transaction():
        items, targets, again = await _fresh(events, ports)
        held = [code for target in targets.values() for code in rules.paid_codes(target.lines)]
        staged = rules.staged(items, held)
        before = await record.first_seen(connection, staged)
        outcome = rules.decide(items, before, targets, utcnow())
        await record.correct_claims(connection, *corrections(staged, before, outcome.claims))
        await record.write(connection, outcome.settlements, outcome.events, outcome.flags)
        await record.write_reversals(connection, outcome.reversals)
        await add_payment_counts(connection, outcome.payments)  # tracegate's statement
    flags = again + outcome.flags
    await _publish(ports, flags, dead)
    await record.mark_published(connection, [flag.flag_id for flag in flags])


async def _decoded(records: Sequence[ConsumerRecord[bytes, bytes]], ports: Ports
                   ) -> tuple[Decoded, list[DeadLetter]]:
    """Typed events, once each (a copy within the batch is dropped), and dead letters."""
    events: Decoded = []
    dead: list[DeadLetter] = []
    seen: set[tuple[str, str]] = set()
    for record_ in records:
        item = decode(Incoming(record_.topic, record_.partition, record_.offset,
                               record_.timestamp, record_.key, record_.value or b""))
        if isinstance(item, DeadLetter):
            dead.append(item)
        elif isinstance(item[1], SettlementEvent) and item[1].from_gate:
            dead.append(DeadLetter(item[0], "baseline (d) does not record gate events"))
        elif (name := _identity(item[1])) not in seen:
            seen.add(name)
            events.append(item)
    await _institutions(ports, events)
    known = [(i, e) for i, e in events
             if isinstance(e, ReversalEvent) or e.institution_id in ports.institutions]
    dead += [DeadLetter(i, f"unknown institution {e.institution_id}") for i, e in events
             if isinstance(e, SettlementEvent) and e.institution_id not in ports.institutions]
    return known, dead


def _identity(event: SettlementEvent | ReversalEvent) -> tuple[str, str]:
    if isinstance(event, ReversalEvent):
        return ("r", event.reversal_id)
    return ("s", event.settlement_id)


async def _institutions(ports: Ports, events: Decoded) -> None:
    """Institutions are cached for the process's life (the baseline's runs do not change
    them; tracegate's consumers re-read them every few seconds)."""
    missing = {e.institution_id for _, e in events if isinstance(e, SettlementEvent)
               and e.institution_id not in ports.institutions}
    if missing:
        for row in await record.institutions(ports.connection, sorted(missing)):
            ports.institutions[row[0]] = InstitutionPolicy(row[0], InstitutionKind(row[1]),
                                                           row[2])


async def _fresh(events: Decoded, ports: Ports
                 ) -> tuple[list[Arrival | Reversal], dict[str, rules.Recorded], list[FlagRecord]]:
    """The events the record does not hold, checked; the recorded settlements their
    reversals name; and the flags of held settlements never published (a crash after the
    commit: their redelivery publishes them)."""
    settlements = [e.settlement_id for _, e in events if isinstance(e, SettlementEvent)]
    reversals = [e for _, e in events if isinstance(e, ReversalEvent)]
    held_s, held_r, targets = await record.held(
        ports.connection, settlements, [r.reversal_id for r in reversals],
        [r.settlement_id for r in reversals])
    items: list[Arrival | Reversal] = []
    for incoming, event in events:
        if isinstance(event, ReversalEvent):
            if event.reversal_id not in held_r:
                items.append(Reversal(event.settlement_id, event.reversal_id,
                                      _at(incoming.timestamp_ms)))
        elif event.settlement_id not in held_s:
            items.append(_check(event, incoming.value, ports))
    again = await record.unpublished(ports.connection, sorted(held_s)) if held_s else []
    return items, targets, again


def _check(event: SettlementEvent, raw: bytes, ports: Ports) -> Arrival:
    enforced = is_enforced(ports.institutions[event.institution_id], event.settled_at_instant,
                           ports.policy)
    return rules.check(event, raw, enforced, ports.policy,
                       ports.settings.patient_hash_key.get_secret_value())


def _at(timestamp_ms: int) -> dt.datetime:
    """A reversal's time: its Kafka timestamp, the same on every redelivery."""
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)


def corrections(staged: list[tuple[Any, ...]], before: dict[str, Claim],
                claims: dict[str, Claim | None]) -> tuple[list[str], dict[str, Claim]]:
    """What the first-seen insert left that the rules end otherwise: (codes to release,
    claims to write). The insert wrote the first payable staged row of each code not held
    before; nearly always the rules end exactly there."""
    deletes: list[str] = []
    upserts: dict[str, Claim] = {}
    written = set(before)
    for row in staged:
        code = row[1]
        if not row[-1] or code in written:
            continue
        written.add(code)
        final = claims.get(code)
        if final is None:
            deletes.append(code)
        elif final != rules.inserted_claim(row):
            upserts[code] = final
    for code, claim in before.items():
        final = claims.get(code)
        if final is None:
            deletes.append(code)
        elif final != claim:
            upserts[code] = final
    return deletes, upserts


async def _publish(ports: Ports, flags: list[FlagRecord], dead: list[DeadLetter]) -> None:
    settings = ports.settings
    await publish_flags(ports.producer, settings.topic_flags, flags)
    for letter in dead:
        await ports.producer.send_and_wait(settings.topic_dlq, orjson.dumps(letter.to_json()),
                                           key=letter.record.key)
