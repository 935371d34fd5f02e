"""The shared Redis connection of the hot scripts: replies reach their own callers however
many wait at once, error replies stay in place, a silent or vanished server fails the calls
waiting and the next call connects anew."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.kit.redis_client import LuaScript, run_script
from service.kit.redis_pipe import RedisPipe
from service.settings import Settings


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pipe(redis: Redis) -> AsyncIterator[RedisPipe]:
    shared = RedisPipe(redis, timeout_s=0.5)
    yield shared
    await shared.aclose()


async def test_concurrent_callers_each_get_their_own_replies(pipe: RedisPipe) -> None:
    key = f"test:pipe:{secrets.token_hex(4)}"
    replies = await asyncio.gather(
        *(pipe.execute_many([("ECHO", f"{n}"), ("INCR", f"{key}:{n % 3}")]) for n in range(300)))
    assert [echo for echo, _ in replies] == [f"{n}".encode() for n in range(300)]
    assert sorted(count for n, (_, count) in enumerate(replies) if n % 3 == 0) == list(
        range(1, 101))


async def test_an_error_reply_stays_in_its_place(pipe: RedisPipe, redis: Redis) -> None:
    key = f"test:pipe:{secrets.token_hex(4)}"
    await redis.set(key, "a string")
    ok, refused, after = await pipe.execute_many(
        [("GET", key), ("HGET", key, "field"), ("STRLEN", key)])
    assert (ok, after) == (b"a string", 8)
    assert isinstance(refused, ResponseError)
    assert "WRONGTYPE" in str(refused)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await pipe.execute("HGET", key, "field")
    assert await pipe.execute("STRLEN", key) == 8  # the connection is still good


async def test_a_script_the_server_lost_is_loaded_and_run(pipe: RedisPipe, redis: Redis) -> None:
    script = LuaScript(f"return ARGV[1] .. '{secrets.token_hex(4)}'")
    await redis.script_flush()
    [reply] = await run_script(pipe, script, [([], [b"x"])])
    assert reply == b"x" + script.text.split("'")[1].encode()
    assert await redis.script_exists(script.sha) == [True]


async def test_a_silent_server_fails_the_waiting_calls_then_is_met_anew(
    pipe: RedisPipe, redis: Redis
) -> None:
    assert await pipe.execute("PING") == b"PONG"
    await redis.client_pause(1200)
    waiting = [asyncio.create_task(pipe.execute("PING")) for _ in range(3)]
    for task in waiting:
        with pytest.raises(RedisTimeoutError):
            await task
    await asyncio.sleep(1.0)  # the pause ends
    assert await pipe.execute("ECHO", "back") == b"back"


async def test_a_connection_the_server_closed_is_made_again(pipe: RedisPipe, redis: Redis) -> None:
    client_id = await pipe.execute("CLIENT", "ID")
    await redis.client_kill_filter(_id=client_id)
    for _ in range(50):  # the reader sees the end of the stream
        try:
            assert await pipe.execute("ECHO", "again") == b"again"
            break
        except RedisConnectionError:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("the pipe never connected again")
    assert await pipe.execute("CLIENT", "ID") != client_id
