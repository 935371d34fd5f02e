"""One batch of the settlements topic, start to finish (the consumers' unit of work):

1. decode every record once (bad ones become dead letters, with their reason);
2. ask the record which of them it holds already (a redelivery after a crash: their effects
   on Redis are applied again, heal.py, nothing is decided twice);
3. read every code of the rest from Redis (one script call per node) and the details the
   decisions need from PostgreSQL (one statement each);
4. decide them in memory in Kafka order (batch.py);
5. write the record in one transaction: COPY for settlements and code events, one
   set-based statement for claims (the arbiter), flags, reversals and counters;
6. after the commit, apply the batch's effects to Redis (idempotent, one call per node);
7. publish the new flags and the dead letters; mark the flags published (while the next
   batch is fetched and decided: `FlagMarks`).
The runner stores the batch's offsets once `finish` returns and commits them at a
checkpoint, after its flags' marks are made.

Redis changes only after the commit, so a crash at any point leaves Redis at or behind what
the record says, never ahead of it: a redelivered batch is decided against the state its own
first attempt never changed, or (if the commit happened) is healed from the record.

Steps 1-4 (`prepare`) of the next batch may run while this one's 5-7 (`finish`) do, so that
the consumer decides while PostgreSQL and Redis write: it is decided on what this batch
decided (`Ahead`), which is what Redis and the record will hold once it is finished. That
holds unless the record's arbiter overrules one of its claims, or it must be redone; the
runner then decides the next batch again, after this one is finished. Nothing of a batch
decided ahead is written before the one before it is finished. Its events the record may
hold already (a redelivery) are healed only then, as healing reads the record as it is; if
that heal changes a code its decisions read, it is decided again there and then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import asyncpg
import msgspec
import orjson
from aiokafka import AIOKafkaProducer

from service.claims.schemas import ClaimEffect, CodeState, Effect, FirstPayment
from service.claims.service import apply_effect, owner_token
from service.decisions.core import canonical_codes, duplicate_severity
from service.firstseen import rebuild
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore, HotSetRebuilding
from service.flags.publisher import publish_flags
from service.flags.schemas import FlagDraft, FlagKind, FlagRecord
from service.flags.service import build_flag
from service.institutions import repository as institutions
from service.institutions.schemas import InstitutionRef
from service.kit.clock import utcnow
from service.kit.kafka import build_producer
from service.kit.redis_client import RedisClient, build_pipe, build_redis
from service.kit.ttl_cache import TtlCache
from service.policy.schemas import PolicyConfig
from service.records import repository as record
from service.records.ledger import ClaimInsert
from service.records.repository import ClaimOwner
from service.records.schemas import SettlementView
from service.settings import Settings
from service.settlements.batch import BatchOutcome, Known, Target, decide_batch
from service.settlements.events import (
    DeadLetter,
    Incoming,
    ReversalEvent,
    SettlementEvent,
    TopicEvent,
    decode,
)
from service.settlements.heal import Recorded, heal
from service.settlements.recent import RecentAnswers

log = logging.getLogger(__name__)
_APPLY_RETRY_S = 0.5
# Events decoded or decided between two yields to the event loop: while a batch is decided
# ahead, the one before it is being written, and each of its round trips waits for a yield.
_SLICE = 250

Events = list[tuple[Incoming, TopicEvent]]


_Mark = Callable[[], Coroutine[Any, Any, None]]


class FlagMarks:
    """The flags of the batch finished last, being marked published in the record while the
    next batch is fetched and decided, instead of between one batch and the next (2-4 ms a
    batch, measured at 12,000 codes/s, of 21-37 ms between batches). Awaited before the next
    batch is finished and before offsets are committed, so a batch's offsets are never
    committed before its flags are marked: a crash before then redelivers the batch, whose
    flags are published again (the same ids) and marked then."""

    def __init__(self) -> None:
        # How to make the marks, and the task making them; None once they are made.
        self._pending: tuple[_Mark, asyncio.Task[None]] | None = None

    def start(self, pool: asyncpg.Pool, flags: Sequence[FlagRecord]) -> None:
        mark = partial(record.mark_published, pool, [flag.flag_id for flag in flags])
        self._pending = (mark, asyncio.create_task(mark()))

    async def done(self) -> None:
        """Once the last marks are made; if they failed, that error, and they are made
        again meanwhile, for the next call (the record may be back by then)."""
        if self._pending is None:
            return
        mark, marking = self._pending
        try:
            await marking
        except Exception:
            self._pending = (mark, asyncio.create_task(mark()))
            raise
        self._pending = None


@dataclass
class StreamPorts:
    """What a consumer's batches talk to, built once at its start."""

    settings: Settings
    pool: asyncpg.Pool
    redis: RedisClient
    store: FirstSeenStore
    producer: AIOKafkaProducer
    policy: PolicyConfig
    # As the gate's: an institution's change reaches decisions within seconds, and a batch
    # need not ask PostgreSQL for institutions it met moments ago.
    institutions: TtlCache[str, InstitutionRef] = field(default_factory=lambda: TtlCache(5.0))
    flag_marks: FlagMarks = field(default_factory=FlagMarks)

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[StreamPorts]:
        # three: a batch writing, the next one reading, and the first's flags marked
        pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=3,
                                         init=record.json_as_bytes)
        redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
        producer = build_producer(settings.kafka_bootstrap)
        await producer.start()
        layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
        pipe = build_pipe(redis)
        ports = cls(settings, pool, redis, FirstSeenStore(redis, layout, pipe), producer,
                    PolicyConfig.from_settings(settings))
        try:
            yield ports
        finally:
            with contextlib.suppress(Exception):  # unmarked: published again if redelivered
                await ports.flag_marks.done()
            await producer.stop()
            if pipe is not None:
                await pipe.aclose()
            await redis.aclose()
            await pool.close()

    async def ensure_hot_set(self) -> bool:
        """Rebuild the first-seen set from the record if Redis lost it (one consumer does it,
        the others wait on the generation markers)."""
        return await rebuild.ensure(self.settings.asyncpg_dsn, self.redis, self.store.layout)


@dataclass
class _Batch:
    events: Events
    names: set[tuple[str, str]]  # the events' identities (`_identity`)
    dead: list[DeadLetter]
    institutions: dict[str, InstitutionRef]
    flags: list[FlagRecord] = field(default_factory=list)  # to publish after the commit


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What a batch did, for the consumer's metrics."""

    codes: int  # trace codes its settlements carried
    flags: list[FlagRecord]  # published
    dead: list[DeadLetter]
    # False if the record's arbiter overruled a claim the batch decided (Redis had lost it,
    # or another consumer raced): a batch decided ahead on this one's decisions is not valid
    as_decided: bool = True


@dataclass(frozen=True, slots=True)
class Ahead:
    """What a decided batch leaves for the next one to be decided on before it is finished:
    the state and first payment of every code it changed (None: released), the settlements
    its reversals may name, and its events' names (a copy of one of them in the next batch
    is a redelivery, which only the record can settle)."""

    states: dict[str, CodeState | None]
    details: dict[str, FirstPayment]
    targets: dict[str, Target]
    names: set[tuple[str, str]]


@dataclass
class Prepared:
    """A batch decided and not yet written."""

    records: Sequence[Incoming]
    batch: _Batch
    outcome: BatchOutcome
    ahead: Ahead
    # Decided ahead: its events the record holds (or the batch before decided), healed only
    # once that batch is finished; and the state of every code its decisions read, as read,
    # which that heal must leave as it is for them to stand.
    old: Events = field(default_factory=list)
    read: dict[str, CodeState | None] = field(default_factory=dict)


async def process(records: Sequence[Incoming], ports: StreamPorts) -> BatchReport:
    """The whole unit of work, one step after the other."""
    return await finish(await prepare(records, ports), ports)


async def prepare(
    records: Sequence[Incoming], ports: StreamPorts, after: Ahead | None = None
) -> Prepared:
    """Steps 1-4. With `after`, decided on what the batch before decided, that batch not
    finished yet: the events the record may hold are healed in `finish`, not here."""
    batch = await _decoded(records, ports)
    async with ports.pool.acquire() as connection:
        old, fresh = await _split_old(batch, connection, after)
        if old and after is None:
            await _heal(connection, ports, batch, old)
            old = []
        outcome, known, read = await _decided(batch, fresh, connection, ports, after, bool(old))
    return Prepared(records, batch, outcome, _ahead(batch, outcome, known), old, read)


async def finish(prepared: Prepared, ports: StreamPorts) -> BatchReport:
    """Steps 5-7: the record, then Redis, then the topics; the flags are marked published
    meanwhile (`FlagMarks`)."""
    await ports.flag_marks.done()  # the batch before's
    as_decided = True
    if prepared.old:
        stands, moved = await _healed_apart(prepared, ports)
        # Redis moved under the heal (a crash between a commit and Redis): the batch decided
        # ahead of this one read it before, so it is decided again (`as_decided`), and so is
        # this one if its own decisions read a code the heal changed.
        as_decided = not moved
        if not stands:
            prepared = await prepare(prepared.records, ports)
    batch, outcome = prepared.batch, prepared.outcome
    async with ports.pool.acquire() as connection, connection.transaction():
        as_decided &= await _write(connection, batch, outcome)
    await _apply(ports, outcome.effects, outcome.forget)
    # Dead letters in the order they were consumed, whichever step refused them.
    dead = sorted(batch.dead + outcome.dead,
                  key=lambda letter: (letter.record.partition, letter.record.offset))
    await _publish(ports, batch.flags, dead)
    if batch.flags:
        ports.flag_marks.start(ports.pool, batch.flags)
    return BatchReport(_codes(batch.events), batch.flags, dead, as_decided)


async def _healed_apart(prepared: Prepared, ports: StreamPorts) -> tuple[bool, bool]:
    """Heal a batch decided ahead's old events, the batch before finished now: (its
    decisions stand, the heal moved Redis). They do not stand if the heal changed a code
    they read (Redis was behind the record there: a crash between a commit and Redis)."""
    async with ports.pool.acquire() as connection:
        healed = await _heal(connection, ports, prepared.batch, prepared.old)
    read = prepared.read
    after: dict[str, CodeState | None] = {}
    for effect in healed.effects:
        code = effect.canonical
        if code in read:
            after[code] = apply_effect(after.get(code, read[code]), effect)
    return all(state == read[code] for code, state in after.items()), healed.moved


def _ahead(batch: _Batch, outcome: BatchOutcome, known: Known) -> Ahead:
    states, details = known.states, known.details
    changed: dict[str, CodeState | None] = {}
    paid: dict[str, FirstPayment] = {}
    for effect in outcome.effects:  # one pass: a code a batch changes, of every code it has
        code = effect.canonical
        if code not in changed:
            changed[code] = states.get(code)
            if code in details:
                paid[code] = details[code]
    return Ahead(changed, paid, known.targets, batch.names)


def _codes(events: Events) -> int:
    """The trace codes the settlements carried. Loops, not nested generators: a count of the
    batch's every line, 1.3 % of a consumer's samples as generators."""
    codes = 0
    for _, event in events:
        if isinstance(event, SettlementEvent):
            for line in event.lines:
                codes += len(line.trace_codes)
    return codes


# --- 1. decoding --------------------------------------------------------------------------


async def _decoded(records: Sequence[Incoming], ports: StreamPorts) -> _Batch:
    """Typed events, one copy of each (a copy redelivered within the batch is dropped), and
    dead letters: undecodable, or naming an institution that is not registered."""
    dead: list[DeadLetter] = []
    events: Events = []
    seen: set[tuple[str, str]] = set()
    for n, item in enumerate(map(decode, records), 1):
        if n % _SLICE == 0:
            await asyncio.sleep(0)  # as in deciding
        if isinstance(item, DeadLetter):
            dead.append(item)
            continue
        name = _identity(item[1])
        if name not in seen:
            seen.add(name)
            events.append(item)
    known = await _institutions(ports, events)
    return _Batch(_known_only(events, known, dead, seen), seen, dead, known)


def _identity(event: TopicEvent) -> tuple[str, str]:
    if isinstance(event, ReversalEvent):
        return ("r", event.reversal_id)
    return ("s", event.settlement_id)


async def _institutions(ports: StreamPorts, events: Events) -> dict[str, InstitutionRef]:
    ids = [e.institution_id for _, e in events if isinstance(e, SettlementEvent)]

    async def load(missing: list[str]) -> dict[str, InstitutionRef]:
        return await institutions.refs(ports.pool, missing)

    return await ports.institutions.get_many_or_load(ids, load)


def _known_only(events: Events, known: dict[str, InstitutionRef],
                dead: list[DeadLetter], names: set[tuple[str, str]]) -> Events:
    kept: Events = []
    for incoming, event in events:
        if isinstance(event, SettlementEvent) and event.institution_id not in known:
            dead.append(DeadLetter(incoming, f"unknown institution {event.institution_id}"))
            names.discard(_identity(event))
        else:
            kept.append((incoming, event))
    return kept


# --- 2. what the record holds already -------------------------------------------------------


def _names(events: Events) -> tuple[list[str], list[str]]:
    """The settlement ids and the reversal ids of these events."""
    settlement_ids = [e.settlement_id for _, e in events if isinstance(e, SettlementEvent)]
    reversal_ids = [e.reversal_id for _, e in events if isinstance(e, ReversalEvent)]
    return settlement_ids, reversal_ids


async def _split_old(
    batch: _Batch, connection: asyncpg.Connection, after: Ahead | None
) -> tuple[Events, Events]:
    """(old, fresh): old, the events the record holds, or that the batch before (`after`)
    decided and is writing; nothing of theirs is decided again."""
    done_s, done_r = await record.recorded(connection, *_names(batch.events))
    before = after.names if after is not None else set()
    if not done_s and not done_r and before.isdisjoint(batch.names):
        return [], batch.events
    old: Events = []
    fresh: Events = []
    for item in batch.events:
        event = item[1]
        held = (_identity(event) in before or event.reversal_id in done_r
                if isinstance(event, ReversalEvent)
                else _identity(event) in before or event.settlement_id in done_s)
        (old if held else fresh).append(item)
    return old, fresh


class _Healed(NamedTuple):
    effects: list[ClaimEffect]  # applied to Redis again
    moved: bool  # any of them changed it: Redis was behind the record


async def _heal(
    connection: asyncpg.Connection, ports: StreamPorts, batch: _Batch, old: Events
) -> _Healed:
    """Events the record holds: their effects on Redis applied again, and their flags that
    never reached the topic queued again."""
    ids = {e.settlement_id for _, e in old}
    views = await record.settlement_views(connection, list(ids))
    codes = [p.canonical for view, _ in views.values() for p in view.payments()]
    owners = await record.claim_owners(connection, codes)
    needed = {view.institution_id for view, _ in views.values()}
    known = {**batch.institutions, **await institutions.refs(connection, needed)}
    recorded = Recorded({sid: view for sid, (view, _) in views.items()}, owners, known)
    healing = heal(old, recorded)
    log.info("healing %d redelivered events the record holds (%d effects)", len(old),
             len(healing.effects))
    moved = await _moves(ports, healing.effects)
    await _apply(ports, healing.effects, healing.forget)
    batch.dead += healing.dead
    batch.flags += await record.unpublished_flags(connection, [
        e.settlement_id for _, e in old if isinstance(e, SettlementEvent)])
    return _Healed(healing.effects, moved)


async def _moves(ports: StreamPorts, effects: list[ClaimEffect]) -> bool:
    """Would these effects change Redis? Read once before they are applied (a heal is
    rare: a redelivery after a crash or a rebalance)."""
    if not effects:
        return False
    seen = await ports.store.read_paid([effect.canonical for effect in effects])
    states = {code: s.state for code, s in seen.items()}
    for effect in effects:
        before = states.get(effect.canonical)
        after = states[effect.canonical] = apply_effect(before, effect)
        if after is not before:  # apply_effect returns the state itself when it is a no-op
            return True
    return False


# --- 3. and 4. reading and deciding ---------------------------------------------------------


async def _decided(
    batch: _Batch, fresh: Events, connection: asyncpg.Connection, ports: StreamPorts,
    after: Ahead | None, keep_read: bool = False,
) -> tuple[BatchOutcome, Known, dict[str, CodeState | None]]:
    """The batch decided, what it was decided on, and (`keep_read`) every code read for it
    with its state as read."""
    targets = await _targets(connection, fresh, after)
    codes = _batch_codes(fresh, targets)
    seen = await ports.store.read_paid(codes)
    states = {code: s.state for code, s in seen.items() if s.state is not None}
    details = {code: s.pending for code, s in seen.items() if s.pending is not None}
    if after is not None:
        _lay_over(states, details, after, codes)
    details.update(await record.first_payments(
        connection, [code for code in states if code not in details]))
    read = {code: states.get(code) for code in codes} if keep_read else {}
    voided = await _voided(ports, fresh)
    settings = ports.settings
    known = Known(batch.institutions, states, details, targets, voided, ports.policy,
                  settings.patient_hash_key.get_secret_value(), utcnow())
    outcome = BatchOutcome()
    for start in range(0, len(fresh), _SLICE):
        decide_batch(fresh[start:start + _SLICE], known, outcome)
        await asyncio.sleep(0)  # the batch before, finishing, goes on between slices
    return outcome, known, read


def _lay_over(
    states: dict[str, CodeState], details: dict[str, FirstPayment], after: Ahead,
    codes: list[str],
) -> None:
    """The batch before's decisions over what Redis had (it may or may not hold them yet),
    for the codes this batch reads: looked up, rather than every code the batch before
    changed inserted (almost none of them are read again)."""
    changed, paid = after.states, after.details
    for code in codes:
        if code not in changed:
            continue
        state = changed[code]
        if state is None:
            states.pop(code, None)
        else:
            states[code] = state
        if code in paid:
            details[code] = paid[code]


async def _targets(
    connection: asyncpg.Connection, events: Events, after: Ahead | None
) -> dict[str, Target]:
    """The settlements the batch's reversals name that the record held before the batch (or
    that the batch before recorded or reversed, not committed yet)."""
    in_batch = {e.settlement_id for _, e in events if isinstance(e, SettlementEvent)}
    wanted = [e.settlement_id for _, e in events
              if isinstance(e, ReversalEvent) and e.settlement_id not in in_batch]
    before = after.targets if after is not None else {}
    # copied: this batch's reversals change them, and it may be decided again
    targets = {sid: msgspec.structs.replace(before[sid], reversed=set(before[sid].reversed))
               for sid in wanted if sid in before}
    views = await record.settlement_views(
        connection, [sid for sid in wanted if sid not in targets])
    targets.update({sid: _target(view, reversed_sets)
                    for sid, (view, reversed_sets) in views.items()})
    return targets


def _target(view: SettlementView, reversed_sets: list[list[int] | None]) -> Target:
    return Target(view.settlement_id, view.institution_id, view.patient_ref, view.settled_at,
                  {line.line_no for line in view.lines}, view.payments(),
                  view.reversed_lines(reversed_sets))


def _batch_codes(events: Events, targets: dict[str, Target]) -> list[str]:
    codes: list[str] = []
    for _, event in events:
        if isinstance(event, SettlementEvent):
            canonical_codes(event, codes)
    codes += [p.canonical for target in targets.values() for p in target.payments]
    return codes


async def _voided(ports: StreamPorts, events: Events) -> set[tuple[str, str]]:
    attempts = [(e.settlement_id, e.attempt) for _, e in events
                if isinstance(e, SettlementEvent) and e.from_gate and e.attempt]
    return await RecentAnswers(ports.redis).voided(attempts) if attempts else set()


# --- 5. writing the record ------------------------------------------------------------------


async def _write(connection: asyncpg.Connection, batch: _Batch, outcome: BatchOutcome) -> bool:
    """True if the record took every claim as the batch decided it."""
    await record.insert_settlements(connection, outcome.settlements)
    await record.insert_events(connection, _event_rows(outcome))
    taken = await record.write_claims(connection, outcome.claims)
    losers = [c for c in outcome.claims.inserts.values() if c.code in taken]
    losers += outcome.claims.contested
    arbiter = await _arbitrate(connection, batch, outcome, losers)
    flags = [flag for r in outcome.settlements for flag in r.flags] + arbiter
    await record.insert_flags(connection, flags)
    batch.flags += flags  # to publish once committed
    await record.insert_reversals(connection, outcome.reversals)
    await record.add_payment_counts(connection, _payments_by_institution(outcome))
    return not losers


def _payments_by_institution(outcome: BatchOutcome) -> Counter[str]:
    """Each settlement's payments added at once, not counted one by one (0.9 % of a
    consumer's samples so); an institution without any gets no entry."""
    counts: Counter[str] = Counter()
    for settlement in outcome.settlements:
        if settlement.payments:
            counts[settlement.institution_id] += len(settlement.payments)
    return counts


def _event_rows(outcome: BatchOutcome) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [
        (p.canonical, r.settled_at, "payment", r.settlement_id, p.line_no, r.institution_id,
         r.patient_ref, p.units, p.duplicate, None)
        for r in outcome.settlements for p in r.payments
    ]
    rows += [
        (code, v.reversed_at, "reversal", v.settlement_id, line_no, v.institution_id,
         v.patient_ref, units, False, v.reversal_id)
        for v in outcome.reversals for code, line_no, units in v.released
    ]
    return rows


async def _arbitrate(
    connection: asyncpg.Connection, batch: _Batch, outcome: BatchOutcome,
    losers: list[ClaimInsert],
) -> list[FlagRecord]:
    """First payments PostgreSQL refused (another settlement holds the code: Redis had lost
    it, or two consumers raced): not first after all, whatever Redis said. Their payments
    become duplicates and are flagged, and Redis is set to the record's owner."""
    if not losers:
        return []
    await record.mark_duplicate_payments(connection, losers)
    owners = await record.claim_owners(connection, [c.code for c in losers])
    flags = []
    for loser in losers:
        owner = owners.get(loser.code)
        if owner is None:
            continue
        outcome.effects += _to_owner(loser, owner)
        flags.append(_arbiter_flag(loser, owner, outcome))
    return flags


def _to_owner(loser: ClaimInsert, owner: ClaimOwner) -> list[ClaimEffect]:
    paid_at = int(owner.paid_at.timestamp())
    return [
        ClaimEffect(Effect.RELEASE, loser.code, owner_token(loser.settlement_id, loser.line_no),
                    0, 0, 0, 0),
        ClaimEffect(Effect.CLAIM, loser.code, owner_token(owner.settlement_id, owner.line_no),
                    owner.institution_no, paid_at, 0, 0),
    ]


def _arbiter_flag(loser: ClaimInsert, owner: ClaimOwner, outcome: BatchOutcome) -> FlagRecord:
    settlement = next(r for r in outcome.settlements if r.settlement_id == loser.settlement_id)
    severity = duplicate_severity(owner.institution_id == loser.institution_id)
    draft = FlagDraft(FlagKind.DUPLICATE_PAYMENT, severity, loser.line_no, loser.code,
                      FirstPayment(owner.settlement_id, owner.institution_id, owner.paid_at))
    return build_flag(draft, settlement_id=loser.settlement_id,
                      institution_id=loser.institution_id, settled_at=loser.paid_at,
                      detected_at=utcnow(), patient_ref=settlement.patient_ref)


# --- 6. and 7. after the commit -------------------------------------------------------------


async def _apply(ports: StreamPorts, effects: list[ClaimEffect], forget: list[str]) -> None:
    """The record is committed: Redis must follow it. While the set is being rebuilt the
    script refuses, so this waits (the rebuild may or may not have read this commit; the
    effects are right either way, being idempotent)."""
    while True:
        try:
            await ports.store.apply(effects, forget)
            return
        except HotSetRebuilding:
            log.info("first-seen set being rebuilt; %d effects wait for it", len(effects))
            await asyncio.sleep(_APPLY_RETRY_S)


async def _publish(ports: StreamPorts, flags: list[FlagRecord], dead: list[DeadLetter]) -> None:
    settings = ports.settings
    sends = [publish_flags(ports.producer, settings.topic_flags, flags)]
    sends += [_dead_letter(ports.producer, settings.topic_dlq, letter) for letter in dead]
    await asyncio.gather(*sends)


async def _dead_letter(producer: AIOKafkaProducer, topic: str, letter: DeadLetter) -> None:
    log.warning("dead-lettered %s[%d]@%d: %s", letter.record.topic, letter.record.partition,
                letter.record.offset, letter.error)
    await producer.send_and_wait(topic, orjson.dumps(letter.to_json()), key=letter.record.key)
