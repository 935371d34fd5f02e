"""The long-lived clients of one API process, built in the lifespan and handed to routes
(never module globals)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.auth.schemas import Caller
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore
from service.kit.database import build_engine, build_reader, build_sessionmaker, open_lookup_pool
from service.kit.kafka import build_producer
from service.kit.metrics import GateMetrics
from service.kit.redis_client import RedisClient, build_pipe, build_redis
from service.kit.ttl_cache import TtlCache, VersionedCache
from service.policy.schemas import PolicyConfig
from service.records.repository import json_as_bytes
from service.settings import Settings
from service.settlements.gate import GatePorts
from service.settlements.recent import Confirmations, RecentAnswers


@dataclass(slots=True)
class Clients:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    lookups: asyncpg.Pool  # the gate's reads of the record, past SQLAlchemy
    redis: RedisClient
    producer: AIOKafkaProducer
    metrics: GateMetrics
    store: FirstSeenStore
    gate: GatePorts
    # Read on every call, changed rarely: seconds of staleness buy a query per request. A key
    # in use is reloaded in the background after 5 s (a revocation still lands within 10 s):
    # its entry expiring under 2,000 calls/s sent them all to PostgreSQL at once.
    callers: TtlCache[bytes, Caller] = field(
        default_factory=lambda: TtlCache(10.0, refresh_after_s=5.0))
    # Pack sizes by med_list_codg (NHSA split rows): a catalogue change reaches them that soon.
    drugs: TtlCache[str, int] = field(default_factory=lambda: TtlCache(5.0))


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    # Overflow connections are closed on return: under load that is a connect per call.
    engine = build_engine(settings.database_url, pool_size=settings.api_database_pool,
                          max_overflow=settings.api_database_pool // 4)
    redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
    # Concurrent settlements share a produce request; each answer still waits for its ack.
    producer = build_producer(settings.kafka_bootstrap, linger_ms=settings.gate_linger_ms)
    await producer.start()
    lookups = await open_lookup_pool(settings.asyncpg_dsn, settings.api_lookup_pool,
                                     init=json_as_bytes)
    pipe = build_pipe(redis)
    store = FirstSeenStore(redis, Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups),
                           pipe)
    confirmations = Confirmations(pipe or redis)
    # Institutions for minutes: the gate drops them whenever one changes (changes.py).
    gate = GatePorts(lookups, store, RecentAnswers(redis), confirmations, producer, settings,
                     PolicyConfig.from_settings(settings),
                     VersionedCache(300.0, refresh_after_s=240.0))
    try:
        yield Clients(settings, engine, build_sessionmaker(engine), build_reader(engine),
                      lookups, redis, producer, GateMetrics(), store, gate)
    finally:
        await confirmations.aclose()
        await producer.stop()
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()
        await lookups.close()
        await engine.dispose()
