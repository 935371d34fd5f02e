"""Redis client construction: a single server or a Redis Cluster, chosen by configuration."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from service.kit.redis_pipe import RedisPipe

RedisClient = Redis | RedisCluster
CLUSTER_NODE_CONNECTIONS = 1024


def build_redis(url: str, *, cluster: bool = False) -> RedisClient:
    if cluster:
        # redis-py's cluster raises MaxConnectionsError (it does not wait) once a node has 32
        # commands in flight: a gate worker admits 256 calls and each sends its slot groups'
        # scripts at once. Connections are made only as concurrency needs them.
        return RedisCluster.from_url(url, max_connections=CLUSTER_NODE_CONNECTIONS)
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def build_pipe(client: RedisClient) -> RedisPipe | None:
    """The shared connection for the hot scripts, on a single server (see redis_pipe)."""
    return None if isinstance(client, RedisCluster) else RedisPipe(client)


async def redis_reachable(client: RedisClient, timeout_s: float = 1.0) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout_s))
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


@dataclass(frozen=True)
class LuaScript:
    text: str

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


ScriptCall = tuple[Sequence[str], Sequence[bytes | str]]  # (keys, args)


async def run_script(
    client: RedisClient | RedisPipe, script: LuaScript, calls: Sequence[ScriptCall]
) -> list[Any]:
    """Every call's reply or error, in order, in one round trip. Errors are returned in their
    place, not raised: a caller that must undo what the other calls did needs to know which
    of them ran. EVALSHA straight away (redis-py's script objects ask SCRIPT EXISTS first, a
    round trip more). A server without the script (new, or restarted) gets it loaded and
    only the calls it refused are sent again, since the others have run."""
    replies = await _evalsha_each(client, script.sha, calls)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if refused:
        await _load(client, script)
        retried = await _evalsha_each(client, script.sha, [calls[i] for i in refused])
        for index, reply in zip(refused, retried, strict=True):
            replies[index] = reply
    return replies


async def _load(client: RedisClient | RedisPipe, script: LuaScript) -> None:
    if isinstance(client, RedisPipe):
        await client.execute("SCRIPT", "LOAD", script.text)
    else:
        await client.script_load(script.text)  # on a cluster: every primary


async def _evalsha_each(
    client: RedisClient | RedisPipe, sha: str, calls: Sequence[ScriptCall]
) -> list[Any]:
    """Replies and errors in place. A Redis Cluster's pipeline refuses scripts, so there each
    call goes on its own, all at once, to the node owning its keys' slot."""
    if isinstance(client, RedisPipe):
        return await client.execute_many(
            [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls])
    if len(calls) == 1:  # a single server's batch, the gate's: no pipeline around it
        keys, args = calls[0]
        try:
            return [await client.evalsha(sha, len(keys), *keys, *args)]
        except Exception as exc:  # noqa: BLE001 - in place, as for a pipeline
            return [exc]
    if isinstance(client, RedisCluster):
        return list(await asyncio.gather(
            *(client.evalsha(sha, len(keys), *keys, *args) for keys, args in calls),
            return_exceptions=True,
        ))
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))
