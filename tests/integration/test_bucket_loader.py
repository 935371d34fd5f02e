"""The rebuild writes each bucket whole with RESTORE instead of HSET: Redis must end up holding
exactly what HSET would have made. On the embedded Redis 6.2: the payload is byte for byte
what its DUMP gives for the same hash, and buckets RESTOREd from the compiled loader read back
(HGETALL, in order, and the encoding) as the reference loader's HSETs write them. Each test
uses a database of its own, away from the live set in database 0."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from cli.migrate import upgrade_to_head
from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen import _bucket_loader as compiled
from service.firstseen import bucket_loader as reference
from service.firstseen import rebuild
from service.firstseen.encoding import Layout, encode_state
from service.kit import redis_dump
from service.kit.redis_bulk import BulkWriter, PackedCommand
from service.settings import Settings
from tests.harness import scratch_database
from tests.unit.test_bucket_loader import (
    INSTITUTIONS,
    INTEGERISH,
    copy_stream,
    fed,
    generated_rows,
)

RESTORED, HSET = 14, 15  # databases


def _url(settings: Settings, number: int) -> str:
    """The session's Redis, database `number` (from_url's `db=` loses to the URL's own)."""
    return urlsplit(settings.redis_url)._replace(path=f"/{number}").geturl()


async def _database(settings: Settings, number: int) -> Redis:
    client = Redis.from_url(_url(settings, number))
    assert client.connection_pool.connection_kwargs["db"] == number
    await client.flushdb()
    return client


@pytest.fixture
async def databases(settings: Settings) -> AsyncIterator[tuple[Redis, Redis]]:
    restored, hset = await _database(settings, RESTORED), await _database(settings, HSET)
    yield restored, hset
    for client in (restored, hset):
        await client.flushdb()
        await client.aclose()


async def test_the_payload_is_what_redis_dumps(databases: tuple[Redis, Redis]) -> None:
    redis, _ = databases
    if int((await redis.info("server"))["redis_version"].split(".")[0]) >= 7:
        pytest.skip("Redis 7 dumps a listpack (it still loads this ziplist: the next test)")
    rng = random.Random(5)
    compression = (await redis.config_get("rdbcompression"))["rdbcompression"]
    assert compression is not None
    await redis.config_set("rdbcompression", "no")  # DUMP as stored, not LZF-compressed
    try:
        for round_ in range(60):
            pairs = {rng.choice([*INTEGERISH, rng.randbytes(6), rng.randbytes(rng.randrange(64))]):
                     rng.choice([*INTEGERISH, rng.randbytes(10), rng.randbytes(40)])
                     for _ in range(rng.randrange(1, 300))}
            await redis.delete("bucket")
            await redis.hset("bucket", mapping=pairs)  # type: ignore[arg-type]
            assert await redis.object("encoding", "bucket") == b"ziplist"
            dumped = await redis.dump("bucket")
            assert dumped == redis_dump.hash_payload(list(pairs.items())), round_
            assert dumped == compiled.hash_payload(list(pairs.items())), round_
    finally:
        await redis.config_set("rdbcompression", compression)


@pytest.mark.parametrize(("layout", "encoding"), [((2, 2), b"ziplist"), ((0, 1), b"hashtable")],
                         ids=["buckets-of-80", "one-of-640"])
async def test_restored_buckets_read_back_as_hset_writes_them(
    databases: tuple[Redis, Redis], layout: tuple[int, int], encoding: bytes
) -> None:
    """(0, 1) puts every code in one bucket, past hash-max-ziplist-entries: Redis makes it a
    hash table either way. A ziplist reads back in the same order too."""
    restored, hset = databases
    stream = copy_stream(generated_rows(random.Random(6), 800))
    await _written(restored, compiled.BucketLoader(*layout, INSTITUTIONS), stream, restore=True)
    await _written(hset, reference.BucketLoader(*layout, INSTITUTIONS), stream, restore=False)
    # a hash table's order is its own insertion history's
    keys = await _same_buckets(restored, hset, ordered=encoding == b"ziplist")
    assert len(keys) == (1 if layout == (0, 1) else 8)
    for key in keys:
        assert await restored.object("encoding", key) == await hset.object("encoding", key)
        assert await restored.object("encoding", key) == encoding


async def test_a_set_larger_than_the_buffer_is_written_in_rounds(
    databases: tuple[Redis, Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BUFFER_CODES the rebuild writes what its loaders hold (two streams here, as two
    connections read the record) and goes on: RESTORE the first round, HSET into the buckets
    the later ones meet again. The set comes out the same."""
    monkeypatch.setattr(rebuild, "BUFFER_CODES", 150)
    rounds, hset = databases
    rows = generated_rows(random.Random(10), 800)
    # a code in one stream only (its second sale too), so no round decides which sale wins
    streams = [copy_stream([row for row in rows if zlib.crc32(row[0].encode()) % 2 == n])
               for n in range(2)]
    writer = rebuild._Writer(rounds, Layout(3, 2), INSTITUTIONS, 2, None)
    sent: list[bool] = []
    real_send = writer._send

    async def send(commands: list[PackedCommand]) -> None:
        sent.extend(b"RESTORE" in command.resp[:40] for command in commands)
        await real_send(commands)

    monkeypatch.setattr(writer, "_send", send)
    for position in range(0, max(map(len, streams)), 5000):
        for n, stream in enumerate(streams):
            if position < len(stream):
                await writer.sink(n)(stream[position : position + 5000])
    for n in range(2):
        writer.stream_ended(n)
    await writer.write_buckets()
    await writer.aclose()
    assert set(sent) == {True, False}  # RESTORE rounds and HSET rounds both happened
    await _written(hset, reference.BucketLoader(3, 2, INSTITUTIONS), copy_stream(rows),
                   restore=False)
    await _same_buckets(rounds, hset, ordered=False)  # later rounds append to a bucket


async def test_a_redis_that_refuses_restore_is_written_by_hset(
    settings: Settings, databases: tuple[Redis, Redis]
) -> None:
    """A user whose ACL leaves RESTORE out (as a managed Redis may): the probe finds out
    before any bucket depends on it, and the set is HSET, the same as the reference's."""
    admin, hset = databases
    user, password = f"norestore-{secrets.token_hex(3)}", secrets.token_hex(8)
    await admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"],
                            commands=["+@all", "-restore"])
    limited = Redis.from_url(_url(settings, RESTORED), username=user, password=password)
    try:
        stream = copy_stream(generated_rows(random.Random(12), 300))
        writer = rebuild._Writer(limited, Layout(3, 2), INSTITUTIONS, 1, None)
        await writer.check_restore()
        assert not writer._restore  # the probe was refused
        for start in range(0, len(stream), 4096):
            await writer.sink(0)(stream[start : start + 4096])
        writer.stream_ended(0)
        await writer.write_buckets()
        await writer.aclose()
    finally:
        await limited.aclose()
        await admin.acl_deluser(user)
    assert writer.written > 0
    assert not await admin.keys("tg:rebuild-probe*")
    await _written(hset, reference.BucketLoader(3, 2, INSTITUTIONS), stream, restore=False)
    await _same_buckets(admin, hset, ordered=True)


async def test_a_rebuild_from_an_empty_record_records_no_time(
    settings: Settings, databases: tuple[Redis, Redis]
) -> None:
    """An empty record lost nothing (a new stack): the set is marked whole with rebuilt-at 0,
    so the gate need not look its first settlements up in the record. Once the record holds a
    claim, the rebuild loads it and records when it ran."""
    redis, _ = databases
    layout = Layout(2, 2)
    async with scratch_database(settings) as own:
        await asyncio.to_thread(upgrade_to_head, own.database_url)
        assert await rebuild.rebuild_exclusively(own.asyncpg_dsn, redis, layout)
        assert await rebuild.complete(redis, layout)
        assert await redis.get(rebuild.REBUILT_AT_KEY) == b"0"
        paid = dt.datetime(2025, 6, 1, 8, tzinfo=dt.UTC)
        connection = await asyncpg.connect(own.asyncpg_dsn)
        try:
            number = await connection.fetchval(
                "INSERT INTO institutions (institution_id, name, kind, region) "
                "VALUES ('P31000000009', 'p', 'retail_pharmacy', 'r') RETURNING number")
            await connection.execute(
                "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
                "first_seen_at) VALUES ($1, 'S-1', 1, 'P31000000009', $2, $2)", "8" * 20, paid)
        finally:
            await connection.close()
        began_ms = time.time() * 1000
        assert await rebuild.rebuild_exclusively(own.asyncpg_dsn, redis, layout)
    assert int(await redis.get(rebuild.REBUILT_AT_KEY) or 0) >= began_ms
    group, bucket, field = layout.locate("8" * 20)
    state = CodeState(owner_token("S-1", 1), number, int(paid.timestamp()))
    assert await redis.hget(layout.bucket_key(group, bucket), field) == encode_state(state)


async def _written(redis: Redis, loader: Any, stream: bytes, restore: bool) -> None:
    """`stream` through `loader` into `redis`, every slot group's commands at once."""
    fed(loader, stream, random.Random(len(stream)))
    bulk = BulkWriter(redis)
    try:
        for group in range(loader.slot_groups):
            resp, count = loader.commands(group, restore)
            await bulk.send([PackedCommand(f"tg:fs{{{group}}}:0", resp, count)])
    finally:
        await bulk.aclose()


async def _same_buckets(ours: Redis, theirs: Redis, ordered: bool) -> list[bytes | str]:
    """Both hold the same buckets with the same fields (in the same order, if `ordered`)."""
    keys = sorted(await theirs.keys("tg:fs*"))
    assert keys == sorted(await ours.keys("tg:fs*"))
    for key in keys:
        mine, reference_read = await ours.hgetall(key), await theirs.hgetall(key)
        assert mine == reference_read, key
        if ordered:
            assert list(mine.items()) == list(reference_read.items()), key
    return keys
