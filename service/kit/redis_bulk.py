"""Bulk writes in raw RESP, for loading millions of fields at once.

The caller packs each command itself (for fixed-size fields that is a bytes concatenation per
field, where redis-py's packer spent microseconds per argument) and the replies are counted, not
parsed: parsing 250,000 HSET replies one by one cost the client more than Redis spent running
them. Every command must answer with one line (an integer or a status); an error reply raises.
Each node gets a connection of its own, made from the client's settings (password, database,
TLS), so a Redis Cluster is written node by node, every command to the node owning its key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from service.kit.redis_client import RedisClient


@dataclass(frozen=True, slots=True)
class PackedCommand:
    key: str  # what a cluster routes the command by
    resp: bytes  # the whole command, in RESP (or several, all for keys of one slot)
    replies: int = 1  # how many commands `resp` holds


def hset_arguments(field: bytes, value: bytes) -> bytes:
    """A field and its value as two HSET arguments in RESP."""
    return b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(field), field, len(value), value)


def hset_command(key: str, arguments: list[bytes]) -> PackedCommand:
    """HSET of `key` with fields already packed by `hset_arguments` (or by SQL, alike)."""
    name = key.encode()
    head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 * len(arguments) + 2, len(name), name)
    return PackedCommand(key, head + b"".join(arguments))


def restore_command(key: str, payload: bytes) -> PackedCommand:
    """RESTORE of `key` from a DUMP payload, never expiring, replacing what the key held."""
    name = key.encode()
    return PackedCommand(key, b"*5\r\n$7\r\nRESTORE\r\n$%d\r\n%s\r\n$1\r\n0\r\n$%d\r\n%s\r\n"
                         b"$7\r\nREPLACE\r\n" % (len(name), name, len(payload), payload))


class BulkWriter:
    """Holds one connection per node for as long as a bulk load runs."""

    def __init__(self, client: RedisClient) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._single = None if isinstance(client, RedisCluster) else client
        self._connections: dict[str, Any] = {}  # redis.asyncio.Connection by node name

    async def send(self, commands: Sequence[PackedCommand]) -> None:
        """All of `commands`, every node's share in one write, the nodes at once."""
        if not commands:
            return
        batches: dict[Any, list[PackedCommand]] = {}
        if self._cluster is not None:
            # a client that has sent nothing yet has no slot map to route by (a no-op after)
            await self._cluster.initialize()
        if self._single is not None:
            batches[self._single.connection_pool] = list(commands)
        else:
            for command in commands:
                batches.setdefault(self._node(command.key), []).append(command)
        connections = [await self._connection(target) for target in batches]
        await asyncio.gather(*(
            _write(connection, batch)
            for connection, batch in zip(connections, batches.values(), strict=True)
        ))

    async def aclose(self) -> None:
        for connection in self._connections.values():
            await connection.disconnect()
        self._connections.clear()

    def _node(self, key: str) -> ClusterNode:
        assert self._cluster is not None
        node = self._cluster.get_node_from_key(key)
        if node is None:
            raise ConnectionError(f"no Redis Cluster node serves the slot of {key!r}")
        return node

    async def _connection(self, target: ClusterNode | ConnectionPool) -> Any:
        """A connection of our own to a cluster node, or like those of a single server's pool:
        made from their settings, it authenticates, selects the database and speaks TLS."""
        name = target.name if isinstance(target, ClusterNode) else ""
        if name not in self._connections:
            connection: Any = target.connection_class(**target.connection_kwargs)
            await connection.connect()
            self._connections[name] = connection
        return self._connections[name]


async def _write(connection: Any, commands: list[PackedCommand]) -> None:
    await connection.send_packed_command([command.resp for command in commands],
                                         check_health=False)
    replies = sum(command.replies for command in commands)
    await _count_replies(connection._reader, replies)  # noqa: SLF001 - see below


async def _count_replies(reader: asyncio.StreamReader, expected: int) -> None:
    """Read `expected` one-line replies straight off the connection's stream (redis-py's
    reader would parse them one await at a time); nothing else is in flight on it."""
    seen, last = 0, b"\n"
    while seen < expected:
        data = await reader.read(1 << 16)
        if not data:
            raise ConnectionError("Redis closed the connection during a bulk write")
        if (last == b"\n" and data.startswith(b"-")) or b"\n-" in data:
            raise ResponseError(f"Redis refused a bulk write: {_first_error(last + data)}")
        seen += data.count(b"\n")
        last = data[-1:]


def _first_error(data: bytes) -> str:
    start = data.find(b"\n-") + 2
    return data[start : data.find(b"\r", start)].decode(errors="replace")
