"""The long-lived clients of one API process, built in the lifespan and handed to routes
through dependencies (never module globals)."""

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
from service.institutions.schemas import InstitutionRef
from service.kit.database import (
    build_engine,
    build_reader,
    build_sessionmaker,
    open_lookup_pool,
)
from service.kit.kafka import build_producer
from service.kit.metrics import Metrics
from service.kit.redis_client import RedisClient, build_redis
from service.kit.ttl_cache import TtlCache
from service.records.recent import RecentAnswers
from service.settings import Settings


@dataclass(slots=True)
class Clients:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    lookups: asyncpg.Pool  # the gate's per-call read of the record, past SQLAlchemy
    redis: RedisClient
    producer: AIOKafkaProducer
    metrics: Metrics
    store: FirstSeenStore
    recent: RecentAnswers
    # Read on every call, changed rarely: seconds of staleness buy a query per request.
    callers: TtlCache[bytes, Caller] = field(default_factory=lambda: TtlCache(10.0))
    institutions: TtlCache[str, InstitutionRef] = field(default_factory=lambda: TtlCache(5.0))
    drugs: TtlCache[str, int] = field(default_factory=lambda: TtlCache(5.0))  # pack sizes


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    # Overflow connections are closed on return: under load that is a connect per call.
    engine = build_engine(settings.database_url, pool_size=settings.api_database_pool,
                          max_overflow=settings.api_database_pool // 4)
    redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
    producer = build_producer(settings.kafka_bootstrap)
    await producer.start()
    lookups = await open_lookup_pool(settings.asyncpg_dsn, settings.api_lookup_pool)
    try:
        layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
        yield Clients(
            settings, engine, build_sessionmaker(engine), build_reader(engine), lookups, redis,
            producer, Metrics(), FirstSeenStore(redis, layout), RecentAnswers(redis),
        )
    finally:
        await producer.stop()
        await redis.aclose()
        await lookups.close()
        await engine.dispose()
