"""The first-seen set on Redis, a batch at a time: every code of a batch packed into one
argument of one script call per Redis node (one per slot group on a Redis Cluster, whose
scripts must stay in one slot).

Three calls, three scripts:
- `read`: the codes' states and pending details (the gate before it decides, a consumer
  before its batch), with the gate's recent answer on the same trip.
- `claim`: the gate's compare-and-sets, all or none, with its recent answer.
- `apply`: a consumer's effects after its commit, each idempotent (see claims.schemas.Effect).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.claims.schemas import ClaimChange, ClaimEffect, CodeState, FirstPayment
from service.firstseen import _packing as packing
from service.firstseen.encoding import Layout, decode_state, encode_state, paid_day
from service.kit.clock import epoch_seconds
from service.kit.errors import Unavailable
from service.kit.redis_client import LuaScript, RedisClient, run_script
from service.kit.redis_pipe import RedisPipe

log = logging.getLogger(__name__)


def _script(name: str) -> LuaScript:
    """Each script after groups.lua, which reads the slot groups it is given (Redis runs
    one chunk a script: no script can include another)."""
    files = resources.files(__package__)
    return LuaScript(files.joinpath("groups.lua").read_text() + files.joinpath(name).read_text())


READ_SCRIPT = _script("read.lua")
CLAIM_SCRIPT = _script("claim.lua")
APPLY_SCRIPT = _script("apply.lua")

_CODE = struct.Struct(">HI6s")  # group index, bucket, field
_EFFECT = struct.Struct(">BHI6sIIHHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_FORGET = 5


class Seen(msgspec.Struct, frozen=True, gc=False):
    """A code as the first-seen set knows it: its state, and the first payment's details while
    they are not yet in PostgreSQL (a gate claim on its way to the record)."""

    state: CodeState | None
    pending: FirstPayment | None


_UNPAID = Seen(None, None)


class GateRead(msgspec.Struct, frozen=True, gc=False):
    values: list[bytes | None]  # of the keys asked for, in order (None: absent)
    seen: dict[str, Seen]


class ClaimOutcome(msgspec.Struct, frozen=True, gc=False):
    """`prior`: the recent answer found instead (nothing changed); `failed`: positions of the
    changes whose code had moved on (nothing changed); else everything landed."""

    prior: bytes | None = None
    failed: frozenset[int] = frozenset()
    guarded: bool = False  # a guard's key held another value (nothing changed)

    @property
    def landed(self) -> bool:
        return self.prior is None and not self.failed and not self.guarded


class HotSetRebuilding(Unavailable):
    """Redis lost the first-seen set (or it is being rebuilt): nothing can be decided now."""

    code = "HOT_SET_REBUILDING"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=5)


def encode_detail(first: FirstPayment) -> bytes:
    return msgspec.json.encode(
        (first.settlement_id, first.institution_id, epoch_seconds(first.paid_at)))


def release_mark(token: int) -> bytes:
    """Kept in a code's pending detail while the gate's release of `token` is not recorded
    yet: the consumers apply a batch's effects after its record commits, so a claim the gate
    made, then released, could otherwise come back when its settlement is recorded late
    (apply.lua skips an effect of a token marked released; recording the release clears the
    mark). JSON details never start with "X"."""
    return b"X" + _U32.pack(token)


def _details(
    changes: Sequence[ClaimChange], details: dict[str, FirstPayment], mark: bool
) -> list[bytes]:
    """The pending detail claim.lua keeps with each change: a new claim's first payment, a
    marked release's mark, or nothing. A settlement's codes share one first payment, encoded
    once."""
    encoded: dict[int, bytes] = {}
    return [_detail(change, details, mark, encoded) for change in changes]


def _detail(
    change: ClaimChange, details: dict[str, FirstPayment], mark: bool, encoded: dict[int, bytes]
) -> bytes:
    if change.expected is None:
        first = details.get(change.canonical)
        if first is None:
            return b""
        found = encoded.get(id(first))
        if found is None:
            found = encoded[id(first)] = encode_detail(first)
        return found
    releases = change.new is None or (change.units or 0) < 0
    return release_mark(change.token) if mark and releases else b""


def decode_detail(raw: bytes) -> FirstPayment:
    settlement_id, institution_id, paid_at = msgspec.json.decode(raw)
    return FirstPayment(settlement_id, institution_id, dt.datetime.fromtimestamp(paid_at, dt.UTC))


class _Call:
    """One script call: its slot groups (their marker and pending keys) and packed ops."""

    __slots__ = ("groups", "index", "parts", "origins")

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.index: dict[int, int] = {}
        self.parts: list[bytes] = []
        self.origins: list[int] = []  # position of each op in the caller's list

    @classmethod
    def packed(cls, groups: list[int], ops: bytes, count: int) -> _Call:
        """A call whose ops were packed whole (service/firstseen/_packing.pyx)."""
        call = cls()
        call.groups, call.parts, call.origins = groups, [ops], list(range(count))
        call.index = {group: slot for slot, group in enumerate(groups, 1)}
        return call

    def slot(self, group: int) -> int:
        found = self.index.get(group)
        if found is None:
            self.groups.append(group)
            found = self.index[group] = len(self.groups)  # Lua's KEYS pairs count from 1
        return found

    def keys(self, layout: Layout, declared: bool) -> list[str]:
        """Each group's marker and pending hash, declared as a Redis Cluster wants; a single
        server's script names them itself (fewer arguments for the client to pack)."""
        if not declared:
            return []
        return [key for group in self.groups
                for key in (layout.generation_key(group), layout.pending_key(group))]

    def argv(self, layout: Layout, *extra: bytes | str) -> list[bytes | str]:
        head = " ".join([layout.tag, *map(str, self.groups)]).encode()
        return [head, b"".join(self.parts), *(_bytes(value) for value in extra)]


class FirstSeenStore:
    def __init__(self, redis: RedisClient, layout: Layout, pipe: RedisPipe | None = None) -> None:
        """`pipe`, on a single server, carries the scripts (a few µs a call where redis-py
        spends ~80); the cluster's paths and everything else use `redis`."""
        self._redis = redis
        self._scripts: RedisClient | RedisPipe = pipe if pipe is not None else redis
        self.layout = layout
        self._cluster = isinstance(redis, RedisCluster)
        self._shape = (layout.bucket_bits, layout.slot_groups)

    @property
    def takes_guards(self) -> bool:
        """Whether `claim` takes guards: on a single server, where every key is at hand."""
        return not self._cluster

    # --- reading ---------------------------------------------------------------------------

    async def read(self, codes: Iterable[str]) -> dict[str, Seen]:
        """Every code's Seen (`Seen(None, None)`: never paid)."""
        unique = list(dict.fromkeys(codes))
        return _with_unpaid(unique, await self._read_paid(unique))

    async def read_paid(self, codes: Iterable[str]) -> dict[str, Seen]:
        """The Seen of the codes the set holds (a code absent was never paid): a batch's
        reads, nearly all of fresh codes, need not hold an entry for each."""
        return await self._read_paid(list(dict.fromkeys(codes)))

    async def _read_paid(self, unique: list[str]) -> dict[str, Seen]:
        calls = self._pack_codes(unique)
        replies = await self._run(READ_SCRIPT, [self._script_call(c) for c in calls])
        return _paid_codes(unique, calls, replies)

    async def read_for_gate(self, codes: Sequence[str], keys: Sequence[str]) -> GateRead:
        """The settlement's codes and the values of `keys` (its recent answer and the like):
        one round trip on a single server (two on a cluster, whose keys live apart)."""
        unique = list(dict.fromkeys(codes))
        if self._cluster:
            values: list[Any] = await asyncio.gather(*(self._redis.get(key) for key in keys))
            return GateRead(values, await self.read(unique) if unique else {})
        calls = self._pack_codes(unique) or [_Call()]
        [call] = calls
        [reply] = await self._run(READ_SCRIPT, [self._script_call(call, *keys)])
        values, at = [], 0
        for _ in keys:
            value, at = _u32_prefixed(reply, at)
            values.append(value)
        return GateRead(values, _with_unpaid(unique, _paid_codes(unique, calls, [reply[at:]])))

    def _pack_codes(self, codes: Sequence[str]) -> list[_Call]:
        """One call on a single server, packed by compiled code; on a cluster, a call per
        slot group."""
        if self._cluster:
            return self._pack_each(codes)
        if not codes:
            return []
        groups, packed = packing.pack_codes(codes, *self._shape)
        return [_Call.packed(groups, packed, len(codes))]

    def _pack_each(self, codes: Sequence[str]) -> list[_Call]:
        """Code by code in Python: a cluster's calls, and the reference of `packing`."""
        calls: dict[int, _Call] = {}
        place = self.layout.place
        for position, code in enumerate(codes):
            group, bucket, field = place(code)
            call = self._call_for(calls, group)
            call.parts.append(_CODE.pack(call.slot(group), bucket, field))
            call.origins.append(position)
        return list(calls.values())

    def _call_for(self, calls: dict[int, _Call], group: int) -> _Call:
        """One call for everything on a single server; one per slot group on a cluster."""
        key = group if self._cluster else 0
        call = calls.get(key)
        if call is None:
            call = calls[key] = _Call()
        return call

    # --- the gate's claims -----------------------------------------------------------------

    async def claim(
        self, changes: Sequence[ClaimChange], details: dict[str, FirstPayment],
        recent: tuple[str, bytes, int] | None = None, *, mark_releases: bool = False,
        guards: Sequence[tuple[str, bytes | None]] = (),
    ) -> ClaimOutcome:
        """All of `changes` land or none do (on a cluster: per slot group, and what landed is
        given back if another group refused). `recent` = (key, answer, ttl_s): set with the
        changes unless the key exists already, whose value then comes back instead.
        `mark_releases`: the changes are a reversal the record will hear of; each release
        leaves a mark (see release_mark) until a consumer records it. `guards`, on a single
        server only (see takes_guards): keys and the values they must still hold (None:
        absent), else nothing changes (`guarded`)."""
        calls = self._pack_changes(changes, details, mark_releases)
        if self._cluster:
            if guards:
                raise ValueError("a Redis Cluster's claim takes no guards (other slots)")
            return await self._claim_on_cluster(changes, calls, recent)
        call = calls[0] if calls else _Call()
        extra: tuple[bytes | str, ...] = (recent[0], recent[1], str(recent[2])) if recent else (
            ("", "", "0") if guards else ())
        extra += tuple(item for key, value in guards for item in (key, value or b""))
        [reply] = await self._run(CLAIM_SCRIPT, [self._script_call(call, *extra)])
        return _claim_outcome(reply, call)

    async def _claim_on_cluster(
        self, changes: Sequence[ClaimChange], calls: list[_Call],
        recent: tuple[str, bytes, int] | None,
    ) -> ClaimOutcome:
        if recent is not None:
            key, value, ttl = recent
            if not await self._redis.set(key, value, ex=ttl, nx=True):
                prior: Any = await self._redis.get(key)
                return ClaimOutcome(prior=prior or b"")
        try:
            replies = await run_script(self._redis, CLAIM_SCRIPT,
                                       [self._script_call(c) for c in calls])
            outcomes = [_claim_outcome(r, c) if not isinstance(r, Exception) else r
                        for r, c in zip(replies, calls, strict=True)]
            failed = frozenset(p for o in outcomes if isinstance(o, ClaimOutcome)
                               for p in o.failed)
            error = next((o for o in outcomes if isinstance(o, Exception)), None)
            if failed or error is not None:
                await self._give_back(changes, calls, outcomes)
                if error is not None:
                    _raise(error)
                if recent is not None:  # as claim.lua: a refused claim sets no answer
                    await self._redis.delete(recent[0])
            return ClaimOutcome(failed=failed)
        except BaseException:
            if recent is not None:
                await self._redis.delete(recent[0])
            raise

    async def _give_back(
        self, changes: Sequence[ClaimChange], calls: list[_Call], outcomes: list[Any]
    ) -> None:
        """Best effort, on a cluster: the groups that took their changes while another
        refused give them back, so a settlement refused for it holds no claim (CONTRACT §4)."""
        landed = [changes[p] for call, outcome in zip(calls, outcomes, strict=True)
                  if isinstance(outcome, ClaimOutcome) and outcome.landed for p in call.origins]
        if landed:
            try:
                await self.claim([c.undone() for c in landed], {})
            except Exception:  # noqa: BLE001 - the caller raises the first failure, not this
                log.warning("could not give back %d claims", len(landed), exc_info=True)

    async def change(
        self, codes: Sequence[str], plan: Callable[[dict[str, CodeState]], list[ClaimChange]],
        attempts: int = 5, *, mark_releases: bool = False,
    ) -> list[ClaimChange] | None:
        """Compare-and-set with retries: read `codes`, plan the changes from their states,
        claim them all or none; again while a code moved underneath. The changes that
        landed, or None when the codes kept moving `attempts` times."""
        for _ in range(attempts):
            seen = await self.read(codes)
            changes = plan({code: s.state for code, s in seen.items() if s.state is not None})
            if (await self.claim(changes, {}, mark_releases=mark_releases)).landed:
                return changes
        return None

    async def give_back(self, changes: Sequence[ClaimChange]) -> None:
        """Take the gate's changes back (its settlement could not be sent on)."""
        outcome = await self.claim([change.undone() for change in changes], {})
        if outcome.failed:
            log.warning("%d claims had moved on before they could be given back",
                        len(outcome.failed))

    def _pack_changes(
        self, changes: Sequence[ClaimChange], details: dict[str, FirstPayment],
        mark_releases: bool = False,
    ) -> list[_Call]:
        """One call on a single server, packed by compiled code (the gate's every claim:
        4.8 % of its API workers' samples at 2,000 calls/s in Python); on a cluster, a call
        per slot group."""
        if self._cluster:
            return self._pack_changes_each(changes, details, mark_releases)
        if not changes:
            return []
        groups, packed = packing.pack_changes(
            changes, _details(changes, details, mark_releases), *self._shape)
        return [_Call.packed(groups, packed, len(changes))]

    def _pack_changes_each(
        self, changes: Sequence[ClaimChange], details: dict[str, FirstPayment],
        mark_releases: bool = False,
    ) -> list[_Call]:
        """Change by change in Python: a cluster's calls, and the reference of `packing`."""
        calls: dict[int, _Call] = {}
        encoded = _details(changes, details, mark_releases)
        for position, change in enumerate(changes):
            # Not `place`'s memo: a gate meets each code once, and every code the memo met
            # left two tuples for the collector to scan (a young collection of 10-20 ms in
            # each API worker every few seconds at 2,000 calls/s).
            group, bucket, field = self.layout.locate(change.canonical)
            call = self._call_for(calls, group)
            call.parts += [_CODE.pack(call.slot(group), bucket, field),
                           _prefixed(change.expected), _prefixed(change.new),
                           _prefixed_bytes(encoded[position])]
            call.origins.append(position)
        return list(calls.values())

    # --- a consumer's effects --------------------------------------------------------------

    async def apply(self, effects: Sequence[ClaimEffect], forget: Iterable[str] = ()) -> None:
        """Apply effects in order, then forget the pending details of `forget`. Raises
        HotSetRebuilding (nothing applied where a group's marker is missing): the caller,
        whose record is committed, tries again until the set is whole."""
        calls = self._pack_effects(effects, list(dict.fromkeys(forget)))
        if calls:
            await self._run(APPLY_SCRIPT, [self._script_call(c) for c in calls])

    def _pack_effects(self, effects: Sequence[ClaimEffect], forget: list[str]) -> list[_Call]:
        if self._cluster:
            return self._pack_effects_each(effects, forget)
        if not effects and not forget:
            return []
        groups, packed = packing.pack_effects(effects, forget, *self._shape)
        return [_Call.packed(groups, packed, 0)]  # apply's replies name no op

    def _pack_effects_each(
        self, effects: Sequence[ClaimEffect], forget: list[str]
    ) -> list[_Call]:
        """Effect by effect in Python: a cluster's calls, and the reference of `packing`."""
        calls: dict[int, _Call] = {}
        for effect in effects:
            self._pack_effect(calls, effect.kind, effect.canonical, effect)
        for code in forget:
            self._pack_effect(calls, _FORGET, code, None)
        return list(calls.values())

    def _pack_effect(
        self, calls: dict[int, _Call], kind: int, code: str, effect: ClaimEffect | None
    ) -> None:
        group, bucket, field = self.layout.place(code)
        call = self._call_for(calls, group)
        if effect is None:
            call.parts.append(_EFFECT.pack(kind, call.slot(group), bucket, field, 0, 0, 0, 0, 0))
            return
        call.parts.append(_EFFECT.pack(
            kind, call.slot(group), bucket, field, effect.token, effect.institution_no,
            paid_day(effect.paid_at), min(effect.units, 0xFFFF), min(effect.pack_size, 0xFFFF)))

    # --- plumbing --------------------------------------------------------------------------

    def _script_call(self, call: _Call, *extra: bytes | str) -> tuple[list[str], list[Any]]:
        return call.keys(self.layout, self._cluster), call.argv(self.layout, *extra)

    async def _run(self, script: LuaScript, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        replies = await run_script(self._scripts, script, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                _raise(reply)
        return replies


def _bytes(value: bytes | str) -> bytes:
    """Arguments as bytes: the client packs them with the fewest checks."""
    return value if isinstance(value, bytes) else value.encode()


def _raise(error: Exception) -> None:
    if isinstance(error, ResponseError) and "HOTSET_REBUILDING" in str(error):
        raise HotSetRebuilding("the first-seen set is being rebuilt") from error
    raise error


def _prefixed(state: CodeState | None) -> bytes:
    return _prefixed_bytes(b"" if state is None else encode_state(state))


def _prefixed_bytes(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _u32_prefixed(reply: bytes, at: int) -> tuple[bytes | None, int]:
    (size,) = _U32.unpack_from(reply, at)
    return (reply[at + 4 : at + 4 + size] or None), at + 4 + size


_PRESENT = struct.Struct(">IH")  # a paid code's position in its call, its value's length


def _with_unpaid(codes: list[str], paid: dict[str, Seen]) -> dict[str, Seen]:
    """Every code's Seen, in the order asked: the paid ones', the rest never paid."""
    return {**dict.fromkeys(codes, _UNPAID), **paid}


def _paid_codes(codes: list[str], calls: list[_Call], replies: list[Any]) -> dict[str, Seen]:
    """The Seen of each paid code, from each call's reply (which lists only those)."""
    seen: dict[str, Seen] = {}
    for call, reply in zip(calls, replies, strict=True):
        at, end, origins = 0, len(reply), call.origins
        while at < end:
            position, size = _PRESENT.unpack_from(reply, at)
            at += 6
            value = reply[at : at + size]
            (pending_size,) = _U16.unpack_from(reply, at + size)
            pending = reply[at + size + 2 : at + size + 2 + pending_size]
            at += size + 2 + pending_size
            first = decode_detail(pending) if pending[:1] not in (b"", b"X") else None
            seen[codes[origins[position]]] = Seen(decode_state(value), first)
    return seen


def _claim_outcome(reply: bytes, call: _Call) -> ClaimOutcome:
    if reply == b"G":
        return ClaimOutcome(guarded=True)
    if reply[:1] == b"R":
        return ClaimOutcome(prior=bytes(reply[1:]))
    if reply[:1] == b"F":
        local = [_U16.unpack_from(reply, at)[0] for at in range(1, len(reply), 2)]
        return ClaimOutcome(failed=frozenset(call.origins[n] for n in local))
    return ClaimOutcome()

