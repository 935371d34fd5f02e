"""The first-seen set on Redis: batched reads and compare-and-set changes, one pipeline (one
round trip) per batch, one script call per slot group so it also runs on a Redis Cluster."""

from __future__ import annotations

import datetime as dt
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import ResponseError

from service.decisions.schemas import ClaimChange, CodeState, FirstPayment
from service.firstseen.encoding import CodeAddress, Layout, decode_state, encode_state
from service.kit.errors import Unavailable
from service.kit.redis_client import LuaScript, RedisClient, run_script

log = logging.getLogger(__name__)

CAS_SCRIPT = LuaScript(resources.files(__package__).joinpath("cas.lua").read_text())


@dataclass(frozen=True, slots=True)
class Seen:
    """A code as the first-seen set knows it: its state, and the first payment's details while
    they are not yet in PostgreSQL."""

    state: CodeState | None
    pending: FirstPayment | None


@dataclass(slots=True)
class _GroupCall:
    """The ops of one slot group, packed into the one argument of one script call."""

    keys: list[str]
    parts: list[bytes] = field(default_factory=list)
    ops: list[bytes] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)  # index of each op in the caller's list
    positions: dict[str, int] = field(default_factory=dict)

    def key_index(self, key: str) -> int:
        if key not in self.positions:
            self.keys.append(key)
            self.positions[key] = len(self.keys)  # Lua's KEYS is 1-based
        return self.positions[key]

    def add(self, origin: int, op: bytes, address: CodeAddress, *values: bytes) -> None:
        index = self.key_index(address.bucket_key)
        self.parts.append(op + _U16.pack(index) + address.field)
        self.parts += [_U16.pack(len(value)) + value for value in values]
        self.ops.append(op)
        self.origins.append(origin)

    def replies(self, reply: bytes) -> list[Any]:
        """One entry per op: (value, pending) for a read, a bool for a change."""
        out: list[Any] = []
        at = 0
        for op in self.ops:
            if op == b"G":
                value, at = _prefixed(reply, at)
                pending, at = _prefixed(reply, at)
                out.append((value, pending))
            else:
                out.append(reply[at] == 1)
                at += 1
        return out


_U16 = struct.Struct(">H")
# op, code, expected, new, detail: one op of the script (see cas.lua)
_Op = tuple[bytes, str, bytes, bytes, bytes]


def _prefixed(reply: bytes, at: int) -> tuple[bytes | None, int]:
    (size,) = _U16.unpack_from(reply, at)
    value = reply[at + 2 : at + 2 + size]
    return (value or None), at + 2 + size


class HotSetRebuilding(Unavailable):
    """Redis lost the first-seen set (or it is being rebuilt): nothing can be decided now."""

    code = "HOT_SET_REBUILDING"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=5)


def encode_detail(first: FirstPayment) -> bytes:
    return orjson.dumps([first.settlement_id, first.institution_id, int(first.paid_at.timestamp())])


def decode_detail(raw: bytes) -> FirstPayment:
    settlement_id, institution_id, paid_at = orjson.loads(raw)
    return FirstPayment(settlement_id, institution_id, dt.datetime.fromtimestamp(paid_at, dt.UTC))


class FirstSeenStore:
    def __init__(self, redis: RedisClient, layout: Layout) -> None:
        self._redis = redis
        self.layout = layout

    async def read(self, codes: Iterable[str]) -> dict[str, Seen]:
        unique = list(dict.fromkeys(codes))
        ops = [(b"G", code, b"", b"", b"") for code in unique]
        results = await self._run(ops)
        return {code: _seen(*result) for code, result in zip(unique, results, strict=True)}

    async def apply(
        self, changes: Sequence[ClaimChange], details: dict[str, FirstPayment]
    ) -> list[bool]:
        """Each change lands only if its code still holds `expected`: a race lost is False.
        If a script call fails (its slot group being rebuilt, a cluster node away) while the
        others ran, what they changed is given back before the error is raised: a
        settlement refused for it must hold no claim (CONTRACT §4)."""
        calls = self._calls([_set_op(change, details) for change in changes])
        replies = await self._scripts(calls)
        results = _results(calls, replies, len(changes))
        if any(isinstance(reply, Exception) for reply in replies):
            await self._give_back([c for c, landed in zip(changes, results, strict=True)
                                   if landed])
            _raise_first(replies)
        return [bool(result) for result in results]

    async def _give_back(self, changes: list[ClaimChange]) -> None:
        """Best effort: these landed moments ago on servers that answered; if one fails now,
        its claims stay until a rebuild, as they did before this was tried."""
        try:
            await self._run([_set_op(change.undone(), {}) for change in changes])
        except Exception:  # noqa: BLE001 - the caller raises the first failure, not this one
            log.warning("could not give back %d claims after a failed change", len(changes),
                        exc_info=True)

    async def forget_pending(self, codes: Iterable[str]) -> None:
        await self._run([(b"F", code, b"", b"", b"") for code in dict.fromkeys(codes)])

    async def _run(self, ops: Sequence[_Op]) -> list[Any]:
        calls = self._calls(ops)
        replies = await self._scripts(calls)
        _raise_first(replies)
        return _results(calls, replies, len(ops))

    def _calls(self, ops: Sequence[_Op]) -> list[_GroupCall]:
        """One script call per slot group, each knowing where its ops came from."""
        calls: dict[int, _GroupCall] = {}
        for index, (op, code, expected, new, detail) in enumerate(ops):
            address = self.layout.address(code)
            self._call_for(calls, address).add(index, op, address, expected, new, detail)
        return list(calls.values())

    async def _scripts(self, calls: list[_GroupCall]) -> list[Any]:
        """Each call's reply or error, in place."""
        if not calls:
            return []
        return await run_script(self._redis, CAS_SCRIPT, [
            (call.keys, [b"".join(call.parts)]) for call in calls
        ])

    def _call_for(self, calls: dict[int, _GroupCall], address: CodeAddress) -> _GroupCall:
        group = address.group
        if group not in calls:
            keys = [self.layout.pending_key(group), self.layout.generation_key(group)]
            calls[group] = _GroupCall(keys)
        return calls[group]


def _results(calls: list[_GroupCall], replies: list[Any], count: int) -> list[Any]:
    """One result per op, in the caller's order; None for the ops of a call that failed."""
    results: list[Any] = [None] * count
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            continue
        for origin, value in zip(call.origins, call.replies(reply), strict=True):
            results[origin] = value
    return results


def _raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            _raise_rebuilding(reply)
        if isinstance(reply, Exception):
            raise reply


def _raise_rebuilding(exc: ResponseError) -> None:
    if "HOTSET_REBUILDING" in str(exc):
        raise HotSetRebuilding("the first-seen set is being rebuilt") from exc


def _set_op(change: ClaimChange, details: dict[str, FirstPayment]) -> _Op:
    return (b"S", change.canonical, _encoded(change.expected), _encoded(change.new),
            _detail(change, details))


def _encoded(state: CodeState | None) -> bytes:
    return b"" if state is None else encode_state(state)


def _detail(change: ClaimChange, details: dict[str, FirstPayment]) -> bytes:
    first = details.get(change.canonical)
    return b"" if first is None or change.expected is not None else encode_detail(first)


def _seen(value: bytes | None, pending: bytes | None) -> Seen:
    state = decode_state(value) if value else None
    return Seen(state, decode_detail(pending) if pending else None)
