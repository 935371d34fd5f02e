"""One batch of the settlements topic, start to finish: decode, decide what did not pass the gate,
claim, record in one PostgreSQL transaction, publish new flags and dead letters. The runner
commits offsets only after `process` returns."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from consumers.events import DeadLetter, Event, ReversalEventIn, SettlementEvent, decode
from consumers.runs import in_waves, runs
from consumers.telemetry import observe_batch
from service.decisions.core import owner_token, with_split_sale
from service.decisions.schemas import ClaimChange, CodeState, FirstPayment, Source
from service.decisions.service import MAX_ATTEMPTS, Candidate, body_hash, decide_and_claim
from service.firstseen import rebuild
from service.firstseen.encoding import Layout
from service.firstseen.leases import ClaimLease
from service.firstseen.store import FirstSeenStore, HotSetRebuilding
from service.flags import repository as flags_repository
from service.flags.publisher import publish_flags
from service.institutions import repository as institutions_repository
from service.institutions.schemas import InstitutionRef
from service.institutions.service import to_ref
from service.kit.clock import utcnow
from service.kit.database import build_engine, build_reader, build_sessionmaker
from service.kit.kafka import build_producer
from service.kit.keyed_hash import keyed_hex
from service.kit.metrics import ConsumerMetrics
from service.kit.redis_client import RedisClient, build_redis
from service.kit.ttl_cache import TtlCache
from service.policy.schemas import PolicyConfig
from service.records import repository as records_repository
from service.records import reversals
from service.records.recent import RecentAnswers
from service.records.schemas import ClaimRow, SettlementRecord
from service.records.service import count_payments, record_settlements
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Outcome:
    flags: dict[str, dict[str, Any]]  # by flag id
    claimed: list[str]
    dead: list[DeadLetter]
    payments: Counter[str] = field(default_factory=Counter)


@dataclass
class BatchProcessor:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]  # autocommit: a lone statement, no BEGIN/COMMIT
    redis: RedisClient
    producer: AIOKafkaProducer
    store: FirstSeenStore
    policy: PolicyConfig
    # As the gate's: an institution's change reaches decisions within seconds, and a batch
    # need not ask PostgreSQL for institutions it met moments ago.
    institutions: TtlCache[str, InstitutionRef] = field(default_factory=lambda: TtlCache(5.0))
    metrics: ConsumerMetrics = field(default_factory=ConsumerMetrics)  # issue 17

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[BatchProcessor]:
        engine = build_engine(settings.database_url, pool_size=2)
        redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
        producer = build_producer(settings.kafka_bootstrap)
        await producer.start()
        layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
        try:
            yield cls(settings, engine, build_sessionmaker(engine), build_reader(engine),
                      redis, producer,
                      FirstSeenStore(redis, layout), PolicyConfig.from_settings(settings))
        finally:
            await producer.stop()
            await redis.aclose()
            await engine.dispose()

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        started = time.perf_counter()  # metrics hook (issue 17)
        events = [decode(record) for record in records]
        async with self.sessionmaker() as session:
            # The lease ends after the commit: a rebuild waits for it before it reads.
            async with ClaimLease(self.redis) as lease, session.begin():
                institutions = await self._institutions(session, events)
                events = [_known(event, institutions) for event in events]
                outcome = await self._record(session, events, institutions)
                await lease.confirm()
        dead = [e for e in events if isinstance(e, DeadLetter)] + outcome.dead
        # Both follow the commit and neither needs the other: Kafka's ack and Redis overlap.
        await asyncio.gather(self._publish(list(outcome.flags.values()), dead),
                             self._forget_pending(outcome.claimed))
        observe_batch(self.metrics, time.perf_counter() - started, events,  # metrics hook
                      outcome.flags.values(), dead)

    async def _forget_pending(self, codes: list[str]) -> None:
        """The record has these claims now; their details need not stay in Redis. A rebuild
        under way clears them itself."""
        try:
            await self.store.forget_pending(codes)
        except HotSetRebuilding:
            log.info("set being rebuilt; it drops the pending details of %d codes", len(codes))

    async def ensure_hot_set(self) -> bool:
        """Rebuild the first-seen set from the record if Redis lost it (one consumer does it,
        the others wait on the generation markers)."""
        return await rebuild.ensure(self.settings.asyncpg_dsn, self.redis, self.store.layout)

    async def _institutions(
        self, session: AsyncSession, events: list[Event]
    ) -> dict[str, InstitutionRef]:
        ids = [e.settlement.institution_id for e in events if isinstance(e, SettlementEvent)]

        async def load(missing: list[str]) -> dict[str, InstitutionRef]:
            rows = await institutions_repository.get_many(session, missing)
            return {row.institution_id: to_ref(row) for row in rows}

        return await self.institutions.get_many_or_load(ids, load)

    async def _record(
        self, session: AsyncSession, events: list[Event], institutions: dict[str, InstitutionRef]
    ) -> _Outcome:
        """Runs of settlements are decided together; a reversal ends a run, so a pack reversed
        and sold again within one batch is seen in the order it happened. A run is decided a
        slice at a time, each slice's record written while the next is decided."""
        outcome = _Outcome({}, [], [])
        recorded = await self._recorded_before(session, events, outcome)
        rebuilt = await self._rebuilt_at(events)
        now = utcnow()
        async with self.reader() as reader, _RecordWriter(session, outcome, now) as writer:
            for item in runs(in_waves(events), self.settings.consumer_slice):
                if isinstance(item, ReversalEventIn):
                    await writer.drain()  # it reads what the runs before it recorded
                    await self._reverse(session, item, rebuilt, outcome)
                    continue
                decided = await self._settle(reader, item, institutions, recorded, rebuilt, now)
                await writer.write(decided)
        await count_payments(session, outcome.payments)
        return outcome

    async def _reverse(
        self, session: AsyncSession, event: ReversalEventIn, rebuilt: int, outcome: _Outcome
    ) -> None:
        # a gate reversal older than the last rebuild: what it released may be back
        again = event.reversal.source == "gate" and event.record.timestamp <= rebuilt
        error = await reversals.record_reversal_event(session, self.store, event.fields, again)
        if error is not None:
            outcome.dead.append(DeadLetter(event.record, error))

    @staticmethod
    async def _recorded_before(
        session: AsyncSession, events: list[Event], outcome: _Outcome
    ) -> set[str]:
        """Which of the batch's settlements the record already holds (one query), and their
        flags that never reached the topic (a crash between commit and publish), queued for
        publishing again. Only a recorded settlement can have flags: a batch of new ones
        (nearly every batch) asks once."""
        ids = [e.settlement.settlement_id for e in events if isinstance(e, SettlementEvent)]
        recorded = await records_repository.recorded_settlement_ids(session, ids)
        if recorded:
            for flag in await flags_repository.unpublished_flags(session, list(recorded)):
                outcome.flags.setdefault(flag["flag_id"], flag)
        return recorded

    async def _settle(
        self, reader: AsyncSession, run: list[SettlementEvent],
        institutions: dict[str, InstitutionRef], recorded_ids: set[str], rebuilt: int,
        now: dt.datetime,
    ) -> list[SettlementRecord]:
        """What to record for a run. `recorded_ids`: settlements the record holds, this
        batch's earlier runs included. A redelivered one changes nothing: deciding it again
        would re-take codes that a reversal recorded since has released (a gate claim would
        be healed back the same way). Copies within one run are left to the record's own
        idempotence (a retried batch finds its own claims and must still record them).

        `reader` is not the batch's transaction, which may be writing the previous slice: the
        decision reads the record only for first payments of codes whose details left Redis,
        and those leave only once their record is committed."""
        run = [e for e in run if e.settlement.settlement_id not in recorded_ids]
        gate = await self._gate_records(run)
        await self._heal(_older_than(rebuilt, run, gate), institutions)
        stream = [self._candidate(e, institutions, now) for e in run if not e.from_gate]
        decided = await decide_and_claim(stream, self.store, reader, self.policy)
        recorded = [*gate, *(d.record for d in decided)]
        recorded_ids.update(record.settlement_id for record in recorded)
        return recorded

    async def _gate_records(self, run: list[SettlementEvent]) -> list[SettlementRecord]:
        """The gate's decisions to record, less attempts the gate answered 503 for."""
        gate = [e for e in run if e.gate_record is not None]
        attempts = [(e.settlement.settlement_id, e.attempt) for e in gate if e.attempt]
        voided = await RecentAnswers(self.redis).voided(attempts)
        if voided:
            log.warning("skipping %d gate settlements answered 503 (voided attempts)",
                        len(voided))
        return [
            e.gate_record for e in gate
            if e.gate_record is not None
            and (e.settlement.settlement_id, e.attempt or "") not in voided
        ]

    async def _rebuilt_at(self, events: list[Event]) -> int:
        """When the set was last rebuilt (epoch ms), read once per batch and only if the gate
        made any of its events: only a gate's claim or release can predate a rebuild unseen. A
        rebuild that starts later removes the markers, so the batch's next store call fails
        and the batch is retried, reading this again."""
        if not any(_from_gate(event) for event in events):
            return 0
        return await rebuild.rebuilt_at_ms(self.redis)

    async def _heal(
        self, gate: list[SettlementRecord], institutions: dict[str, InstitutionRef]
    ) -> None:
        """Put back what the gate claimed and the first-seen set lacks (it was rebuilt while
        these were on their way to the record): a whole pack if absent, a split sale's units
        and token unless listed (a rebuild that read the sale from the record listed it)."""
        sales = [(record, claim) for record in gate for claim in record.claims]
        await self._heal_whole([s for s in sales if s[1].units is None], institutions)
        split = [s for s in sales if s[1].units is not None]
        for _ in range(MAX_ATTEMPTS):
            if await self._heal_split(split, institutions):
                return
        log.warning("could not put back %d split sales: their packs keep changing", len(split))

    async def _heal_whole(
        self, claims: list[tuple[SettlementRecord, ClaimRow]],
        institutions: dict[str, InstitutionRef],
    ) -> None:
        """A present claim is left alone (compare-and-set against absent)."""
        changes, details = [], {}
        for record, claim in claims:
            number = institutions[record.institution_id].number
            state = CodeState(owner_token(record.settlement_id, claim.line_no), number,
                              int(record.settled_at.timestamp()))
            changes.append(ClaimChange(claim.code, claim.line_no, None, state))
            details[claim.code] = _first_payment(record)
        if changes:
            await self.store.apply(changes, details)

    async def _heal_split(
        self, sales: list[tuple[SettlementRecord, ClaimRow]],
        institutions: dict[str, InstitutionRef],
    ) -> bool:
        """One read, one compare-and-set per pack; False if a change got in between (sales
        that landed are listed now, so trying again skips them)."""
        if not sales:
            return True
        seen = await self.store.read(claim.code for _, claim in sales)
        states = {code: found.state for code, found in seen.items()}
        changes: list[ClaimChange] = []
        details: dict[str, FirstPayment] = {}
        for record, claim in sales:
            before = states[claim.code]
            after = with_split_sale(
                before, owner_token(record.settlement_id, claim.line_no),
                institutions[record.institution_id].number, int(record.settled_at.timestamp()),
                claim.units or 0, claim.pack_size or 0)
            if after is not None:
                changes.append(ClaimChange(claim.code, claim.line_no, before, after))
                details.setdefault(claim.code, _first_payment(record))
                states[claim.code] = after
        return all(await self.store.apply(changes, details)) if changes else True

    def _candidate(
        self, event: SettlementEvent, institutions: dict[str, InstitutionRef], now: Any
    ) -> Candidate:
        settlement = event.settlement
        patient = settlement.patient_id
        key = self.settings.patient_hash_key.get_secret_value()
        return Candidate(
            settlement, institutions[settlement.institution_id], Source.STREAM,
            body_hash(settlement), keyed_hex(key, patient) if patient else None, now,
        )

    async def _publish(self, flags: list[dict[str, Any]], dead: list[DeadLetter]) -> None:
        """After the record is committed: flags, then the outbox mark (one statement, its
        own unit of work); dead letters."""
        await publish_flags(self.producer, self.settings.topic_flags, flags)
        await asyncio.gather(*[
            await self.producer.send(self.settings.topic_dlq, orjson.dumps(d.to_json()),
                                     key=d.record.key)
            for d in dead
        ])
        async with self.reader() as session:  # connects only if there is a flag to mark
            await flags_repository.mark_published(session, [f["flag_id"] for f in flags])
        if dead:
            log.warning("dead-lettered %d events: %s", len(dead), dead[0].error)


def _from_gate(event: Event) -> bool:
    if isinstance(event, SettlementEvent):
        return event.from_gate
    return isinstance(event, ReversalEventIn) and event.reversal.source == "gate"


def _older_than(
    rebuilt: int, run: list[SettlementEvent], gate: list[SettlementRecord]
) -> list[SettlementRecord]:
    """Only a gate claim made before the last rebuild can be missing from the set; one made
    after it is there (or was released by a reversal, and must stay released)."""
    old = {e.settlement.settlement_id for e in run if e.record.timestamp <= rebuilt}
    return [record for record in gate if record.settlement_id in old]


def _first_payment(record: SettlementRecord) -> FirstPayment:
    return FirstPayment(record.settlement_id, record.institution_id, record.settled_at)


def _known(event: Event, institutions: dict[str, InstitutionRef]) -> Event:
    if isinstance(event, SettlementEvent):
        institution_id = event.settlement.institution_id
        if institution_id not in institutions:
            return DeadLetter(event.record, f"unknown institution {institution_id}")
    return event


@dataclass
class _RecordWriter:
    """Writes each slice's records in the batch's transaction while the caller decides the
    next slice: the consumer's Python and PostgreSQL's inserts overlap instead of taking
    turns. One write is in flight at a time, so the record keeps the batch's order. What the
    records claimed, paid and flagged goes into the batch's outcome."""

    session: AsyncSession
    outcome: _Outcome
    detected_at: dt.datetime
    _writing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _RecordWriter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.drain()
        elif self._writing is not None:
            # The transaction is rolled back next: its connection must be idle first. The
            # batch's own error is the one to raise; the write's, if any, is only retrieved.
            writing, self._writing = self._writing, None
            await asyncio.wait([writing])
            if not writing.cancelled():
                writing.exception()

    async def write(self, records: list[SettlementRecord]) -> None:
        await self.drain()
        self.outcome.claimed += [claim.code for record in records for claim in record.claims]
        self._writing = asyncio.create_task(self._write(records))

    async def drain(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _write(self, records: list[SettlementRecord]) -> None:
        new_flags, payments = await record_settlements(self.session, records, self.detected_at)
        self.outcome.payments.update(payments)
        for flag in new_flags:
            self.outcome.flags.setdefault(flag["flag_id"], flag)
