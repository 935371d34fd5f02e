"""One Redis connection that many coroutines share, for the few commands the gate and the
consumers send on every call (the first-seen set's scripts, the gate's confirmations).

Commands are written to the socket at once; one reader task matches replies to callers in
the order they were sent (Redis answers in that order), parsing with hiredis. Concurrent
calls so share writes and reads, and a command costs its caller a few microseconds of CPU,
where a redis-py command cost ~70-90 µs (its pool, retries, encoders and per-command
timeouts) and the gate sent two or three a call. A single server only: a Redis Cluster keeps
redis-py, which routes by slot. The connection is made like the client's own (redis-py's
connection class and settings), so it authenticates, selects the database and speaks TLS."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[bytes | str | int]


class RedisPipe:
    def __init__(self, client: Redis, timeout_s: float = 5.0) -> None:
        self._pool = client.connection_pool
        self._timeout_s = timeout_s
        self._connection: Any = None  # redis.asyncio.Connection, read and written by us
        self._reading: asyncio.Task[None] | None = None
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._connecting = asyncio.Lock()
        self._unsent: list[bytes] = []  # commands packed, to be written at the loop's next turn

    async def execute(self, *command: bytes | str | int) -> Any:
        """The command's reply; an error reply raises, as redis-py would."""
        [reply] = await self.execute_many([command])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Every command's reply in order, in one write; error replies are returned in their
        place (redis-py's exception classes). An outage, or replies later than the timeout,
        raise: the connection is then dropped and the next command connects anew."""
        if not commands:
            return []
        writer = await self._writer()
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), len(commands))
        self._waiting.append(pending)
        self._unsent += [_pack(command) for command in commands]
        if len(self._unsent) == len(commands):  # the first since the last write
            loop.call_soon(self._send, writer)
        # A timer, not wait_for: no task a call (this is the gate's every call).
        late = loop.call_later(self._timeout_s, self._expire, pending)
        try:
            return await pending.done
        finally:
            late.cancel()

    def _send(self, writer: asyncio.StreamWriter) -> None:
        """One write for every command given since the last: the calls of one turn of the
        event loop share it (each write wakes Redis, which costs more than the bytes)."""
        if writer is not self._connection_writer():
            return  # dropped meanwhile: its callers have failed, a new connection sends anew
        unsent, self._unsent = self._unsent, []
        writer.write(b"".join(unsent))

    def _connection_writer(self) -> asyncio.StreamWriter | None:
        return None if self._connection is None else self._connection._writer  # noqa: SLF001

    async def aclose(self) -> None:
        self._drop(RedisConnectionError("the Redis connection was closed"))

    async def _writer(self) -> asyncio.StreamWriter:
        if self._connection is None:
            async with self._connecting:
                if self._connection is None:
                    await self._connect()
        return self._connection._writer  # type: ignore[no-any-return]  # noqa: SLF001

    async def _connect(self) -> None:
        connection: Any = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            await asyncio.wait_for(connection.connect(), self._timeout_s)
        except TimeoutError:
            raise RedisTimeoutError("could not connect to Redis in time") from None
        self._connection = connection
        # Only this task reads the stream from now on (redis-py's parser never does).
        self._reading = asyncio.create_task(self._read(connection))

    async def _read(self, connection: Any) -> None:
        parser = hiredis.Reader(replyError=_error)
        reader: asyncio.StreamReader = connection._reader  # noqa: SLF001 - see _connect
        try:
            while data := await reader.read(1 << 16):
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    self._resolve(reply)
            self._drop(RedisConnectionError("Redis closed the connection"), connection)
        except (OSError, hiredis.ProtocolError) as exc:
            self._drop(RedisConnectionError(f"the Redis connection broke: {exc}"), connection)

    def _resolve(self, reply: Any) -> None:
        pending = self._waiting[0]
        pending.replies.append(reply)
        if len(pending.replies) == pending.expected:
            self._waiting.popleft()
            if not pending.done.done():  # a caller cancelled has gone; its replies too
                pending.done.set_result(pending.replies)

    def _expire(self, pending: _Pending) -> None:
        if not pending.done.done():
            self._drop(RedisTimeoutError("Redis did not answer in time"))

    def _drop(self, error: Exception, connection: Any = None) -> None:
        """Every caller waiting gets `error`; the connection is closed, so a late reply
        cannot reach the wrong caller on it."""
        if connection is not None and connection is not self._connection:
            return  # an older connection's reader ending: this one is already replaced
        connection, self._connection = self._connection, None
        if connection is not None:
            connection._writer.close()  # noqa: SLF001 - ours alone (see _connect)
        reading, self._reading = self._reading, None
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()
        self._unsent = []  # their callers fail below
        waiting, self._waiting = self._waiting, collections.deque()
        for pending in waiting:
            if not pending.done.done():
                pending.done.set_exception(error)
                with contextlib.suppress(BaseException):
                    pending.done.exception()  # retrieved here: a cancelled caller never will


@dataclass(slots=True)
class _Pending:
    """One caller's commands: their replies as they arrive, and the future they complete."""

    done: asyncio.Future[list[Any]]
    expected: int
    replies: list[Any] = field(default_factory=list)


def _pack(command: Command) -> bytes:
    # hiredis' stub types a one-element tuple where it takes any number of arguments
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
    return packed


def _error(message: str) -> ResponseError:
    """An error reply as redis-py would raise it."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)
