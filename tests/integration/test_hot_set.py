"""Redis losing the first-seen set: the gate refuses to guess (503 HOT_SET_REBUILDING), the set
is rebuilt from PostgreSQL, and no duplicate slips through afterwards."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import orjson
import pytest

from service.claims.service import owner_token
from service.firstseen.encoding import Layout, decode_state
from service.firstseen.rebuild import LOCK_KEY, rebuild_exclusively
from service.kit.redis_client import RedisClient
from service.settings import Settings
from service.settlements import stream
from service.settlements.events import Incoming
from service.settlements.stream import StreamPorts
from tests import factories as f
from tests.harness import redis_client
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = redis_client(settings)
    yield client
    await client.aclose()


async def _raw(redis: RedisClient, layout: Layout, code: str) -> bytes | None:
    address = layout.address(code)
    value = await redis.hget(address.bucket_key, address.field)
    assert value is None or isinstance(value, bytes)
    return value


def _sellers(raw: bytes | None) -> tuple[int, int | None, int | None, frozenset[int]]:
    assert raw is not None
    state = decode_state(raw)
    assert state.owner in state.split_owners
    return state.institution_no, state.units_used, state.pack_size, frozenset(state.split_owners)


async def _gate(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return await api.post("/v1/settlements", json=body, headers=headers)


async def test_redis_loss_is_noticed_and_rebuilt_from_the_record(
    api: httpx.AsyncClient, admin_headers: dict[str, str], redis: RedisClient
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    assert (await _gate(api, admin_headers, f.settlement(a, [f.line(1, [code])]))).json()[
        "decision"] == "pay"
    assert await eventually(lambda: f.history(api, admin_headers, code), bool)
    await redis.set(LOCK_KEY, "held-by-test", ex=60)  # nobody may rebuild yet
    await redis.flushdb()
    await redis.set(LOCK_KEY, "held-by-test", ex=60)
    fresh = f.cn20()
    refused = await _gate(api, admin_headers, f.settlement(b, [f.line(1, [fresh])]))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "HOT_SET_REBUILDING"
    assert int(refused.headers["Retry-After"]) > 0
    await redis.delete(LOCK_KEY)  # the consumer notices the lost set and rebuilds it
    duplicate = await eventually(
        lambda: _gate(api, admin_headers, f.settlement(b, [f.line(1, [code])])),
        lambda response: response.status_code != 503,
    )
    assert duplicate.status_code == 200
    assert duplicate.json()["lines"][0]["reasons"][0]["code"] == "DUPLICATE_PAYMENT"
    again = await _gate(api, admin_headers, f.settlement(b, [f.line(1, [fresh])]))
    assert again.json()["decision"] == "pay"  # the refused attempt claimed nothing


async def test_rebuild_command_reloads_every_claim(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, redis: RedisClient
) -> None:
    a = await f.register(api, admin_headers)
    codes, split = [f.cn20() for _ in range(3)], f.cn20()
    await _gate(api, admin_headers, f.settlement(a, [f.line(1, codes)]))
    for quantity in (2, 3):  # two lines sell units of one split pack
        await _gate(api, admin_headers, f.settlement(a, [f.line(1, [split], split=True,
                                                                quantity=quantity, pack_size=10)]))
    for code in codes:
        assert await eventually(partial(f.history, api, admin_headers, code), bool)
    # Both split sales in the record first: this compares what the rebuild reads (a sale still
    # on its way is put back later, by the consumer that records it)
    assert await eventually(partial(f.history, api, admin_headers, split),
                            lambda h: h is not None and len(h["events"]) == 2)
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    before = [await _raw(redis, layout, code) for code in [*codes, split]]
    env = {**os.environ, "TRACEGATE_DATABASE_URL": settings.database_url,
           "TRACEGATE_REDIS_URL": settings.redis_url,
           "TRACEGATE_REDIS_CLUSTER": str(settings.redis_cluster).lower()}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "rebuild-hot-set", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"rebuild" in err  # the progress bar
    rebuilt = int(out.split()[1])
    assert rebuilt >= 4
    # whole packs (encoded by PostgreSQL) byte for byte as the gate wrote them; the split pack
    # (encoded in Python) with the same sellers, though perhaps listed in another order: the
    # record orders two sales of one batch by partition, not by the gate's order
    after = [await _raw(redis, layout, code) for code in [*codes, split]]
    assert after[:3] == before[:3]
    assert all(before)
    assert _sellers(after[3]) == _sellers(before[3])
    verify = await api.post("/v1/codes/verify", headers=await f.key_for(
        api, admin_headers, "regulator"), json={"institution_id": a, "trace_codes": codes})
    assert [r["status"] for r in verify.json()["results"]] == ["paid"] * 3


async def test_pending_details_live_in_a_hash_table_not_a_scanned_listpack(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, redis: RedisClient
) -> None:
    """A batch leaves hundreds of pending details per group; as a listpack each lookup would
    scan them all. The script keeps the hash a hash table even when it holds one detail."""
    a = await f.register(api, admin_headers)
    code = f.cn20()
    paid = await _gate(api, admin_headers, f.settlement(a, [f.line(1, [code])]))
    assert paid.status_code == 200
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    pending = layout.pending_key(layout.address(code).group)
    assert await redis.object("encoding", pending) == b"hashtable"
    assert await eventually(partial(f.history, api, admin_headers, code), bool)
    assert await redis.hexists(pending, "!")  # what keeps it one (and keeps the key)


async def test_consumers_put_back_gate_sales_a_rebuild_missed(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, redis: RedisClient
) -> None:
    """A rebuild reloads the record; gate sales still on their way to it are put back as the
    consumers record them: a whole pack if absent, a split sale's units unless listed."""
    inst = await f.register(api, admin_headers)
    split, whole = f.cn20(), f.cn20()
    first = f.settlement(inst, [f.line(1, [split], split=True, quantity=2, pack_size=10),
                                f.line(2, [whole])])
    second = f.settlement(inst, [f.line(1, [split], split=True, quantity=3, pack_size=10)])
    events = [await _gate_event(api, admin_headers, settings, body) for body in (first, second)]
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    for code in (split, whole):  # as if a rebuild had read the record before these sales
        await redis.hdel(layout.address(code).bucket_key, layout.address(code).field)
    async with StreamPorts.open(settings) as ports:
        await stream.process([events[0]], ports)
        await stream.process([events[1], events[1]], ports)  # listed once, however often
        seen = await ports.store.read([split, whole])
    pack = seen[split].state
    assert pack is not None
    tokens = (owner_token(first["settlement_id"], 1), owner_token(second["settlement_id"], 1))
    assert (pack.units_used, pack.pack_size, pack.split_owners) == (5, 10, tokens)
    restored = seen[whole].state
    assert restored is not None
    assert (restored.owner, restored.is_split) == (owner_token(first["settlement_id"], 2), False)


async def _gate_event(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings,
    body: dict[str, Any],
) -> Incoming:
    """A gate settlement's event as the gate sent it (read back from the topic)."""
    assert (await _gate(api, admin_headers, body)).status_code == 200
    key = body["settlement_id"].encode()
    found = await eventually(lambda: f.topic_records(settings, settings.topic_settlements, key),
                             bool)
    assert found
    return found[0]


async def test_a_gate_reversal_the_set_put_back_is_released_again(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, redis: RedisClient
) -> None:
    """The three-way race: a gate sale, its gate reversal, a rebuild, all before the record
    has either. The gate released the code, the rebuild (or a consumer recording the sale)
    put it back; the consumer recording the reversal releases it again."""
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code])])
    assert (await _gate(api, admin_headers, body)).json()["decision"] == "pay"
    assert await eventually(partial(f.history, api, admin_headers, code), bool)
    # The state after that race: the sale recorded and holding the code, the reversal's event
    # not yet recorded.
    sid, reversal_id = body["settlement_id"], f.settlement_id()
    released = [[code, 1, None]]
    answer = {"settlement_id": sid, "reversal_id": reversal_id, "released": [code],
              "replayed": False}
    event = {"type": "reversal", "settlement_id": sid, "reversal_id": reversal_id,
             "line_nos": [1], "source": "gate",
             "reversed_at": dt.datetime.now(dt.UTC).isoformat(),
             "effects": {"released": released, "answer": answer}}
    record = Incoming(settings.topic_settlements, 0, 0, int(time.time() * 1000), sid.encode(),
                      orjson.dumps(event))
    async with StreamPorts.open(settings) as ports:
        await stream.process([record], ports)
    regulator = await f.key_for(api, admin_headers, "regulator")
    verify = await api.post("/v1/codes/verify", headers=regulator,
                            json={"institution_id": inst, "trace_codes": [code]})
    assert verify.json()["results"][0]["status"] == "unpaid"
    history = await f.history(api, admin_headers, code)
    assert [e["type"] for e in history["events"]] == ["payment", "reversal"]


async def test_a_batch_committed_during_a_rebuild_reaches_the_set_after_it(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, redis: RedisClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebuild takes the set down while a batch writes its record: the batch's claims are
    in what the rebuild reads, or (committed after it read) reach Redis once it is whole
    again. Either way the rebuilt set holds them."""
    inst, code = await f.register(api, admin_headers), f.cn20()
    body = f.settlement(inst, [f.line(1, [code])])
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    rebuilding: list[asyncio.Task[bool]] = []
    write = stream._write

    async def write_during_a_rebuild(*args: Any, **kwargs: Any) -> bool:
        rebuilding.append(asyncio.create_task(
            rebuild_exclusively(settings.asyncpg_dsn, redis, layout)))
        while await redis.exists(layout.generation_key(0)):  # noqa: ASYNC110 - Redis, polled
            await asyncio.sleep(0.005)
        return await write(*args, **kwargs)

    monkeypatch.setattr(stream, "_write", write_during_a_rebuild)
    async with StreamPorts.open(settings) as ports:
        await stream.process([f.stream_record(settings.topic_settlements, body)], ports)
    assert await rebuilding[0]
    raw = await _raw(redis, layout, code)
    assert raw is not None, "the rebuild dropped a claim the batch committed"
    assert decode_state(raw).owner == owner_token(body["settlement_id"], 1)
