"""Rebuild the first-seen set from the record (`tracegate rebuild-hot-set`, or by itself when
Redis lost it).

PostgreSQL's `code_claims` holds every code that is paid now. Its partitions stream as plain
columns over COPY (service/records/claims_export.py), READERS connections at once, into
compiled loaders that address and encode each whole pack (nearly all) and file it under its
bucket (service/firstseen/bucket_loader.py says what they do; bucket_core.h does it); once
the streams end, each bucket is written whole, one RESTORE of a DUMP payload per bucket, so Redis
neither parses nor inserts fields one by one. Split packs (few) are encoded here, with the
lines that sold from them, and HSET on top. Each slot group has a generation marker that
the scripts insist on: it is removed first and set last, so while the set is incomplete the
gate answers 503 HOT_SET_REBUILDING and the consumers wait, instead of taking a missing claim
for "unpaid". Consumers change Redis only after their commit, and wait while the markers are
down, so whatever they committed is in the record this reads, or reaches Redis after the
rebuild. Claims the gate made that the record does not hold yet are put back by the
consumers as they record the gate's settlements."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
from redis.exceptions import ResponseError

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen._bucket_loader import BucketLoader
from service.firstseen.bucket_loader import SplitClaim
from service.firstseen.encoding import Layout, encode_state
from service.kit.redis_bulk import (
    BulkWriter,
    PackedCommand,
    hset_arguments,
    hset_command,
    restore_command,
)
from service.kit.redis_client import RedisClient
from service.kit.redis_dump import hash_payload
from service.records import claims_export

CHUNK = 50_000  # split-pack claims whose sellers are read at a time
# Connections reading code_claims' partitions at once: sending the rows is most of PostgreSQL's
# work, and one backend was the rebuild's critical path.
READERS = 2
# Whole-pack codes the loader holds before it writes them: ~25 B a code at the peak, commands
# for Redis included (measured: +50 MB for 2 M codes), so ~500 MB. Buckets are written whole
# by RESTORE only the first time; a set larger than this is written in several rounds, the
# later ones by HSET into buckets that already hold fields (several times slower).
BUFFER_CODES = 20_000_000
# Commands gathered before they go out: one round of them is in flight while the next slot
# groups are built.
SEND_BYTES = 8 << 20
# asyncpg hands the COPY stream over in whatever each socket read returned (~20 KB when this
# process keeps up), at a fixed cost in Python per chunk; after a small one, a millisecond's
# pause lets PostgreSQL fill the socket (asyncpg does not read while the sink runs), so the
# rest comes in ~170 KB chunks: measured, a quarter less of this process's CPU a code and
# PostgreSQL never waits (here it writes ~170 KB a millisecond, within the socket's buffer).
SMALL_CHUNK = 128 << 10
CHUNK_PAUSE_S = 0.001
_log = logging.getLogger(__name__)


LOCK_KEY = "tg:rebuild-lock"
LOCK_TTL_S = 6  # renewed every 2 s while a rebuild runs


async def complete(redis: RedisClient, layout: Layout) -> bool:
    """Every group's marker is there: the set is whole."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in layout.generation_keys():
            pipe.exists(key)
        return all(await pipe.execute())


async def ensure(dsn: str, redis: RedisClient, layout: Layout) -> bool:
    """Rebuild if a marker is missing and nobody else is rebuilding; True if this did."""
    if await complete(redis, layout):
        return False
    return await rebuild_exclusively(dsn, redis, layout)


async def rebuild_exclusively(
    dsn: str, redis: RedisClient, layout: Layout, progress: Callable[[int], None] | None = None
) -> bool:
    """The lock lives LOCK_TTL_S and is renewed while the rebuild runs, so a rebuilder that
    dies leaves the job to another within seconds, not hours."""
    token = uuid.uuid4().hex
    if not await redis.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
        return False
    renewal = asyncio.create_task(_renew(redis, token))
    try:
        await redis.delete(*layout.generation_keys())
        await clear(redis)
        loaded = await rebuild(dsn, redis, layout, progress)
        await _mark_complete(redis, layout, token, loaded)
    finally:
        renewal.cancel()
        if await redis.get(LOCK_KEY) == token.encode():
            await redis.delete(LOCK_KEY)
    return True


async def _renew(redis: RedisClient, token: str) -> None:
    while True:
        await asyncio.sleep(LOCK_TTL_S / 3)
        if await redis.get(LOCK_KEY) != token.encode():
            return
        await redis.expire(LOCK_KEY, LOCK_TTL_S)


REBUILT_AT_KEY = "tg:rebuilt-at"


async def _mark_complete(
    redis: RedisClient, layout: Layout, generation: str, loaded: int
) -> None:
    """The markers back, and when: what a rebuild may have lost (the gate's recent answers
    among it) is older than this. A set rebuilt from an empty record lost nothing (a new
    stack): it records no time, so the gate need not ask the record about every settlement
    for its first minutes."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(REBUILT_AT_KEY, int(time.time() * 1000) if loaded else 0)
        for key in layout.generation_keys():
            pipe.set(key, generation)
        await pipe.execute()


async def clear(redis: RedisClient) -> int:
    """Drop the set and its pending details (the record is the truth being reloaded), 1,000
    keys per UNLINK. Not in a pipeline: a cluster pipeline's `unlink` is a coroutine that
    never joins the pipeline, so the keys stayed."""
    removed = 0
    for pattern in ("tg:fs{*", "tg:pd{*"):
        keys: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            keys.append(key)
            if len(keys) == CLEAR_EVERY:
                removed, keys = removed + await redis.unlink(*keys), []
        if keys:
            removed += await redis.unlink(*keys)
    return removed


CLEAR_EVERY = 1000


async def rebuild(
    dsn: str, redis: RedisClient, layout: Layout, progress: Callable[[int], None] | None = None
) -> int:
    """Stream the claims and write them; returns how many codes were written."""
    connections = [await asyncpg.connect(dsn) for _ in range(READERS)]
    writer: _Writer | None = None
    try:
        async with claims_export.snapshots(connections[0], connections[1:]):
            numbers = await claims_export.institution_numbers(connections[0])  # the newest
            partitions = await claims_export.claim_partitions(connections[0])
            shares: list[list[claims_export.Partition | None]] = [
                [*partitions[n :: READERS]] for n in range(min(READERS, len(partitions)))
            ] or [[None]]  # not partitioned: one connection reads it whole
            writer = _Writer(redis, layout, numbers, len(shares), progress)
            await writer.check_restore()
            async with asyncio.TaskGroup() as reads:  # one failing stops the others
                for n, share in enumerate(shares):
                    reads.create_task(_read(connections[n], share, writer, n))
            await writer.write_buckets()
            await _write_split(connections[0], layout, writer)
        return writer.written
    finally:
        if writer is not None:
            await writer.aclose()
        for connection in connections:
            await connection.close()


async def _read(connection: Any, share: list[claims_export.Partition | None], writer: _Writer,
                stream: int) -> None:
    """One connection's partitions, one COPY each, into loader number `stream`."""
    for partition in share:
        await claims_export.copy_claims(connection, writer.sink(stream), partition)
        writer.stream_ended(stream)


async def _write_split(connection: Any, layout: Layout, writer: _Writer) -> None:
    split = writer.split_claims()
    for start in range(0, len(split), CHUNK):
        chunk = split[start : start + CHUNK]
        await writer.write_split(await _split_values(connection, layout, chunk))


async def _split_values(
    connection: Any, layout: Layout, rows: list[SplitClaim]
) -> list[tuple[int, int, bytes]]:
    """Split packs (few): their value lists every line that sold units, from code_events."""
    sellers: dict[str, list[int]] = defaultdict(list)
    for code, sid, line_no in await claims_export.split_sellers(connection,
                                                                [row[0] for row in rows]):
        sellers[code].append(owner_token(sid, line_no))
    entries: list[tuple[int, int, bytes]] = []
    for code, sid, line_no, number, paid_at, used, pack_size in rows:
        token = owner_token(sid, line_no)
        owners = tuple(sellers.get(code, (token,)))
        value = encode_state(CodeState(token, number, paid_at, used, pack_size, owners))
        group, bucket, field = layout.locate(code)
        entries.append((group, bucket, hset_arguments(field, value)))
    return entries


class _Writer:
    """Feeds each COPY stream to a loader of its own and writes what they hold: every bucket
    whole by RESTORE once the streams end (or the loaders hold BUFFER_CODES: a later round
    HSETs into buckets already written), one round of commands in flight while the next is
    built."""

    def __init__(
        self, redis: RedisClient, layout: Layout, institutions: dict[str, int], streams: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._layout, self._progress, self._bulk = layout, progress, BulkWriter(redis)
        self._redis = redis
        self._loaders = [BucketLoader(layout.bucket_bits, layout.slot_groups, institutions)
                         for _ in range(streams)]
        self._restore, self.written = True, 0
        self._in_flight: asyncio.Future[Any] | None = None
        self._round = asyncio.Lock()  # one round of writes at a time, whichever stream fills

    async def check_restore(self) -> None:
        """RESTORE can be refused (renamed away, denied by an ACL, left out by a managed
        Redis): one probe per slot group finds out before any bucket depends on it, and
        then every bucket goes by HSET, as before, slower."""
        probes = [restore_command(f"tg:rebuild-probe{{{group}}}", hash_payload([(b"f", b"v")]))
                  for group in range(self._layout.slot_groups)]
        try:
            await self._bulk.send(probes)
        except ResponseError as error:
            _log.warning("rebuild: Redis refused RESTORE (%s); writing buckets by HSET", error)
            self._restore = False
        finally:
            await self._redis.delete(*[probe.key for probe in probes])

    def sink(self, stream: int) -> Callable[[bytes], Awaitable[None]]:
        """What COPY stream number `stream` hands its chunks to."""
        return partial(self._feed, self._loaders[stream])

    async def _feed(self, loader: BucketLoader, data: bytes) -> None:
        if len(data) < SMALL_CHUNK:
            await asyncio.sleep(CHUNK_PAUSE_S)
        rows = loader.feed(data)
        self.written += rows
        if self._progress is not None:
            self._progress(rows)
        if self._buffered() >= BUFFER_CODES:
            async with self._round:
                if self._buffered() >= BUFFER_CODES:  # not written by the round just waited
                    await self.write_buckets()

    def stream_ended(self, stream: int) -> None:
        """COPY stream number `stream` is whole (else this raises); another may follow."""
        self._loaders[stream].next_stream()

    def _buffered(self) -> int:
        return sum(loader.buffered for loader in self._loaders)

    def split_claims(self) -> list[SplitClaim]:
        """The split packs the loaders kept aside, for `write_split` (after the last round)."""
        main = self._gathered()
        if main.unknown_institutions:
            _log.warning("rebuild: %d claims name no known institution; not reloaded",
                         main.unknown_institutions)
        return main.take_split()

    async def write_buckets(self) -> None:
        """Every bucket the loaders hold, slot group by slot group."""
        main = self._gathered()
        batch: list[PackedCommand] = []
        size = 0
        for group in range(self._layout.slot_groups):
            resp, count = main.commands(group, self._restore)
            if count:
                batch.append(PackedCommand(self._layout.bucket_key(group, 0), resp, count))
                size += len(resp)
            if size >= SEND_BYTES:
                await self._send(batch)
                batch, size = [], 0
        await self._send(batch)
        await self._drain()
        self._restore = False

    def _gathered(self) -> BucketLoader:
        """The first loader, holding what every loader held (streams go on into their own)."""
        main = self._loaders[0]
        for loader in self._loaders[1:]:
            main.absorb(loader)
        return main

    async def write_split(self, rows: list[tuple[int, int, bytes]]) -> None:
        """Split packs: one HSET per bucket, on top of what RESTORE wrote."""
        buckets: defaultdict[tuple[int, int], list[bytes]] = defaultdict(list)
        for group, bucket, arguments in rows:
            buckets[group, bucket].append(arguments)
        await self._send([hset_command(self._layout.bucket_key(*where), arguments)
                          for where, arguments in buckets.items()])
        await self._drain()
        self.written += len(rows)
        if self._progress is not None:
            self._progress(len(rows))

    async def aclose(self) -> None:
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
        await self._bulk.aclose()

    async def _send(self, commands: list[PackedCommand]) -> None:
        await self._drain()
        if commands:
            self._in_flight = asyncio.ensure_future(self._bulk.send(commands))
            await asyncio.sleep(0)  # let it go out

    async def _drain(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight
