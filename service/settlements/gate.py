"""The gate (POST /v1/settlements) and its reversal: decide, claim, send on to the record and
only then answer.

A new settlement costs two Redis round trips and a Kafka acknowledgement, no PostgreSQL: one
read (its codes, its recent answer if any, the last rebuild's time), the pure decision, one
script call that makes every claim and sets its recent answer, or none of them. The record is
asked only where Redis cannot know: a settlement old enough that its recent answer may have
expired, or one that may predate the last rebuild (Redis lost its recent answers with the
rest), and for the first payment of a re-used code. If Kafka does not acknowledge, every
claim is given back and the answer is 503: a settlement the record will never see must not
hold a code."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import msgspec
import orjson
from aiokafka import AIOKafkaProducer

from service.claims.schemas import ClaimChange, FirstPayment
from service.claims.service import plan_release
from service.decisions.checks import InvalidSettlement
from service.decisions.core import DecisionContext, canonical_codes, decide
from service.decisions.schemas import Settlement, Source
from service.firstseen.rebuild import REBUILT_AT_KEY
from service.firstseen.store import FirstSeenStore, GateRead, Seen
from service.institutions import changes as institution_changes
from service.institutions import repository as institutions
from service.institutions.schemas import InstitutionRef
from service.institutions.service import UnknownInstitution, to_policy
from service.kit.clock import utcnow
from service.kit.kafka import PublishFailed, publish
from service.kit.ttl_cache import VersionedCache
from service.policy.schemas import PolicyConfig
from service.policy.service import is_enforced, parse_settled_at
from service.records import repository as record
from service.records.schemas import (
    ClaimRow,
    RecordedLine,
    SettlementRecord,
    SettlementView,
    decode_lines,
)
from service.settings import Settings
from service.settlements import recording
from service.settlements.batch import reversal_answer
from service.settlements.events import ReversalEffects, ReversalEvent, SettlementEvent, encode
from service.settlements.recent import (
    TTL_S,
    Confirmations,
    RecentAnswers,
    RecentSettlement,
    confirmed_key,
    settlement_key,
)
from service.settlements.recording import Candidate
from service.settlements.schemas import (
    ClaimContention,
    RecordUnavailable,
    ReversalConflict,
    ReversalRequest,
    SettlementConflict,
    SettlementNotFound,
    UnknownLine,
)

MAX_ATTEMPTS = 5
# A settlement settled within this long of now, and after the last rebuild, cannot have a
# recent answer that expired or was lost: the record need not be asked whether it exists.
RECENT_WINDOW_S = TTL_S // 2
CLOCK_SKEW_S = 300
_CONFIRM_POLL_S = 0.005
# `_prior`'s answer when the call before this one gave up: decide this one afresh.
_DECIDE_AGAIN = b""
_RECENT = msgspec.json.Decoder(RecentSettlement)


class Given(msgspec.Struct, frozen=True, gc=False):
    """An answer of the gate: its JSON, and its decision for the metrics (pay, partial,
    reject; a reversal's: reversed, or replayed)."""

    body: bytes
    decision: str


@dataclass
class LastRead:
    """A key's value as the gate's last full read found it (None: not read yet; the value
    a 1-tuple, its None = the key absent)."""

    found: tuple[bytes | None] | None = None


@dataclass(frozen=True, slots=True)
class GatePorts:
    """What the gate talks to, built once in the API's lifespan."""

    lookups: asyncpg.Pool  # committed rows, past SQLAlchemy (records.repository.json_as_bytes)
    store: FirstSeenStore
    recent: RecentAnswers
    confirmations: Confirmations
    producer: AIOKafkaProducer
    settings: Settings
    policy: PolicyConfig
    institutions: VersionedCache[str, InstitutionRef]
    rebuilt_at: LastRead = field(default_factory=LastRead)


async def settle(settlement: Settlement, ports: GatePorts) -> Given:
    _not_ahead(settlement)
    digest = recording.body_hash(settlement)
    unseen = await _settle_unseen(settlement, digest, ports)
    if unseen is not None:
        return unseen
    codes = canonical_codes(settlement)
    for _ in range(MAX_ATTEMPTS):
        read = await ports.store.read_for_gate(codes, _gate_keys(settlement.settlement_id))
        ports.institutions.follow(read.values[3])
        ports.rebuilt_at.found = (read.values[2],)
        institution = await institution_for(ports, settlement.institution_id)
        prior = await _prior(settlement, digest, read, ports)
        if prior is _DECIDE_AGAIN:
            continue
        if prior is not None:
            return Given(prior, "replayed")
        claimed = await _decide_and_claim(settlement, institution, digest, read, ports)
        if claimed is not None:
            decided = claimed[0]
            return Given(await _send(settlement, *claimed, ports), decided.outcome)
    raise ClaimContention("trace codes are being settled concurrently; retry", retry_after_s=1)


async def institution_for(ports: GatePorts, institution_id: str) -> InstitutionRef:
    """From a cache of seconds: an institution's change reaches the gate that soon."""

    async def load(missing: list[str]) -> dict[str, InstitutionRef]:
        return await institutions.refs(ports.lookups, missing)

    found = await ports.institutions.get_many_or_load([institution_id], load)
    if institution_id not in found:
        raise UnknownInstitution(f"institution {institution_id} is not registered")
    return found[institution_id]


def _gate_keys(settlement_id: str) -> list[str]:
    return [settlement_key(settlement_id), confirmed_key(settlement_id), REBUILT_AT_KEY,
            institution_changes.VERSION_KEY]


# --- a settlement seen before ---------------------------------------------------------------


async def _prior(
    settlement: Settlement, digest: bytes, read: GateRead, ports: GatePorts
) -> bytes | None:
    """The answer to give if this settlement_id was decided before, else None."""
    recent, confirmed, rebuilt_at, _ = read.values
    if recent is not None:
        return await _replay_recent(settlement, digest, recent, confirmed is not None, ports)
    if not _may_be_recorded(settlement, int(rebuilt_at or 0)):
        return None
    view = await record.get_settlement(ports.lookups, settlement.settlement_id)
    return None if view is None else _replayed(view.answer, view.body_hash, digest,
                                               settlement.settlement_id)


def _not_ahead(settlement: Settlement) -> None:
    """A POS settles now: a settled_at further ahead of this clock than clocks drift is a
    mistake, refused before anything is claimed. (It also bounds what the gate may have
    decided before a rebuild: see `_may_be_recorded`.)"""
    ahead = parse_settled_at(settlement.settled_at).timestamp() - time.time()
    if ahead > CLOCK_SKEW_S:
        raise InvalidSettlement(
            f"settled_at: {settlement.settled_at!r} is {ahead / 60:.0f} minutes ahead of the "
            f"gate's clock (at most {CLOCK_SKEW_S // 60} allowed)")


def _may_be_recorded(settlement: Settlement, rebuilt_at_ms: int) -> bool:
    """Could a recent answer of this settlement have expired, or been lost with Redis? A
    settlement the gate decided before the last rebuild was settled at most CLOCK_SKEW_S
    after it (`_not_ahead`); one settled since cannot have been."""
    settled = parse_settled_at(settlement.settled_at).timestamp()
    return settled < time.time() - RECENT_WINDOW_S or settled < rebuilt_at_ms / 1000 + CLOCK_SKEW_S


def _replayed(answer: bytes, stored_hash: bytes, digest: bytes, settlement_id: str) -> bytes:
    if stored_hash != digest:
        raise SettlementConflict(
            f"settlement {settlement_id} was already decided with another body; "
            "a new attempt needs a new settlement_id")
    return orjson.dumps({**orjson.loads(answer), "replayed": True})


async def _replay_recent(
    settlement: Settlement, digest: bytes, raw: bytes, confirmed: bool, ports: GatePorts
) -> bytes:
    entry = _RECENT.decode(raw)
    answer = _replayed(bytes(entry.answer), bytes.fromhex(entry.body_hash), digest,
                       settlement.settlement_id)
    if confirmed:
        return answer
    outcome = await _await_confirmation(ports, settlement.settlement_id, entry)
    if outcome == "confirmed":
        return answer
    if outcome == "gone":  # the first call gave up (503): this one decides afresh
        return _DECIDE_AGAIN
    return await _unconfirmed(settlement, entry, answer, ports)


async def _await_confirmation(
    ports: GatePorts, settlement_id: str, entry: RecentSettlement
) -> str:
    """The same settlement is on its way to Kafka in another call (a POS retrying at once,
    or twice in parallel): wait for that call's outcome, at most until its deadline."""
    keys = [settlement_key(settlement_id), confirmed_key(settlement_id)]
    while time.time() * 1000 < entry.confirm_by_ms:
        await asyncio.sleep(_CONFIRM_POLL_S)
        read = await ports.store.read_for_gate([], keys)
        recent, confirmed = read.values
        if confirmed is not None:
            return "confirmed"
        if recent is None or _RECENT.decode(recent).attempt != entry.attempt:
            return "gone"
    return "timeout"


async def _unconfirmed(
    settlement: Settlement, entry: RecentSettlement, answer: bytes, ports: GatePorts
) -> bytes:
    """Decided, but never confirmed sent: its gate died, or lost Kafka and could not even
    give its claims back. Sent again unless the record has it (the same decision and
    effects: whichever copy the record meets first is kept, the other is a redelivery)."""
    if await record.get_settlement(ports.lookups, settlement.settlement_id) is None:
        event = _event(settlement, entry.patient_ref, entry.attempt, entry.answer,
                       _stored(entry))
        await _publish(ports, settlement.settlement_id, encode(event))
    ports.confirmations.add(settlement.settlement_id)
    return answer


def _stored(entry: RecentSettlement) -> SettlementRecord:
    """The effects of a recent entry, as the event carries them."""
    lines = decode_lines(entry.lines)
    settled_at = parse_settled_at(entry.settled_at)
    view = SettlementView("", entry.institution_id, entry.patient_ref, b"", lines, b"",
                          settled_at)
    payments = view.payments()
    claims = [ClaimRow(p.canonical, p.line_no, p.units,
                                 _pack_size(lines, p.line_no) if p.units else None)
              for p in payments if not p.duplicate]
    answer = orjson.loads(bytes(entry.answer))  # orjson takes no msgspec.Raw
    return SettlementRecord("", entry.institution_id, settled_at, entry.patient_ref,
                            Source.GATE.value, bytes.fromhex(entry.body_hash),
                            answer["enforced"], answer["decision"], bytes(entry.lines),
                            bytes(entry.answer), payments, claims, [])


def _pack_size(lines: list[RecordedLine], line_no: int) -> int | None:
    return next(line.pack_size for line in lines if line.line_no == line_no)


# --- a new settlement -----------------------------------------------------------------------


async def _settle_unseen(settlement: Settlement, digest: bytes, ports: GatePorts) -> Given | None:
    """The usual call in one round trip: a new settlement whose codes were never paid.
    Decided as if none were, and claimed on that condition, on the condition that no answer
    of it is recent, and guarded by what the last full read found of the institutions'
    version and the last rebuild (the record need not be asked then). None when any of it is
    not so, or not known: the full path reads first."""
    guards = _unseen_guards(settlement, ports)
    institution = ports.institutions.peek(settlement.institution_id)
    if guards is None or institution is None:
        return None
    unpaid = GateRead([], dict.fromkeys(canonical_codes(settlement), Seen(None, None)))
    claimed = await _decide_and_claim(settlement, institution, digest, unpaid, ports, guards)
    if claimed is None:
        return None
    return Given(await _send(settlement, *claimed, ports), claimed[0].outcome)


def _unseen_guards(
    settlement: Settlement, ports: GatePorts
) -> list[tuple[str, bytes | None]] | None:
    version, rebuilt = ports.institutions.version, ports.rebuilt_at.found
    if not ports.store.takes_guards or version is None or rebuilt is None:
        return None
    if _may_be_recorded(settlement, int(rebuilt[0] or 0)):
        return None
    return [(institution_changes.VERSION_KEY, version[0]), (REBUILT_AT_KEY, rebuilt[0])]


async def _decide_and_claim(
    settlement: Settlement, institution: InstitutionRef, digest: bytes, read: GateRead,
    ports: GatePorts, guards: list[tuple[str, bytes | None]] | None = None,
) -> tuple[SettlementRecord, str, list[ClaimChange]] | None:
    """Decide and claim; None if a code changed since it was read, an answer of the
    settlement appeared or a guard moved (read and decide again)."""
    settled_at = settlement.settled_at_instant
    states = {code: s.state for code, s in read.seen.items() if s.state is not None}
    context = DecisionContext(
        Source.GATE, is_enforced(to_policy(institution), settled_at, ports.policy),
        institution.number, institution.institution_id, settled_at, ports.policy, states,
        await _first_payments(read.seen, ports))
    decision = decide(settlement, context)
    ref = recording.patient_ref(ports.settings.patient_hash_key.get_secret_value(),
                                settlement.patient_id)
    decided = recording.decided(
        Candidate(settlement, institution, Source.GATE, digest, ref, utcnow()), decision,
        settled_at)
    attempt = os.urandom(16).hex()  # as unique as a uuid4's hex, without building one
    first = FirstPayment(settlement.settlement_id, settlement.institution_id, settled_at)
    entry = _entry(settlement, decided, attempt, ports.settings.gate_publish_timeout_s)
    outcome = await ports.store.claim(
        decision.changes, {c.canonical: first for c in decision.changes if c.expected is None},
        (settlement_key(settlement.settlement_id), entry, _ttl(settlement)),
        guards=guards or ())
    # Not landed: decided concurrently (read again, and replay that one), a code moved on
    # or a guard moved (read again, and decide on what is there).
    return (decided, attempt, decision.changes) if outcome.landed else None


async def _first_payments(seen: dict[str, Seen], ports: GatePorts) -> dict[str, FirstPayment]:
    """Details of each paid code: from Redis while the record lacks them, else the record
    (asked only for codes paid already: a re-use, rare)."""
    found = {code: s.pending for code, s in seen.items() if s.pending is not None}
    missing = [code for code, s in seen.items() if s.state is not None and s.pending is None]
    if missing:
        found.update(await record.first_payments(ports.lookups, missing))
    return found


def _entry(
    settlement: Settlement, decided: SettlementRecord, attempt: str, publish_timeout_s: float
) -> bytes:
    """Kafka acknowledges by `publish_timeout_s` or the gate gives up; the entry's deadline
    leaves a margin for the confirmation on top."""
    deadline = int((time.time() + publish_timeout_s + 2.0) * 1000)
    return msgspec.json.encode(RecentSettlement(
        decided.institution_id, decided.patient_ref, decided.body_hash.hex(),
        settlement.settled_at, attempt, deadline, msgspec.Raw(decided.lines),
        msgspec.Raw(decided.answer)))


def _ttl(settlement: Settlement) -> int:
    """An hour, or longer for a settlement dated ahead: its entry must outlive the window
    in which the gate does not ask the record about it."""
    settled = parse_settled_at(settlement.settled_at).timestamp()
    return max(TTL_S, int(settled + RECENT_WINDOW_S + CLOCK_SKEW_S - time.time()) + 1)


def _event(
    settlement: Settlement, patient_ref: str | None, attempt: str, answer: msgspec.Raw,
    decided: SettlementRecord,
) -> SettlementEvent:
    return SettlementEvent(
        settlement.settlement_id, settlement.institution_id, settlement.settled_at,
        settlement.lines, None, source=Source.GATE.value, patient_ref=patient_ref,
        attempt=attempt, decision=answer, effects=recording.gate_effects(decided))


async def _send(
    settlement: Settlement, decided: SettlementRecord, attempt: str,
    changes: list[ClaimChange], ports: GatePorts,
) -> bytes:
    event = _event(settlement, decided.patient_ref, attempt, msgspec.Raw(decided.answer),
                   decided)
    try:
        await _publish(ports, settlement.settlement_id, encode(event))
    except RecordUnavailable:
        await _give_up(ports, settlement.settlement_id, attempt, changes)
        raise
    ports.confirmations.add(settlement.settlement_id)
    return decided.answer


async def _publish(ports: GatePorts, key: str, value: bytes) -> None:
    settings = ports.settings
    try:
        await publish(ports.producer, settings.topic_settlements, key, value,
                      settings.gate_publish_timeout_s)
    except PublishFailed as exc:
        raise RecordUnavailable(f"the record cannot take settlements now ({exc})") from exc


async def _give_up(
    ports: GatePorts, settlement_id: str, attempt: str, changes: list[ClaimChange]
) -> None:
    """Kafka did not acknowledge in time, yet the produce may still land: void the attempt
    first (the consumers skip it; its recent answer goes with it), then give its claims
    back."""
    try:
        await ports.recent.void_attempt(settlement_id, attempt)
    finally:
        await ports.store.give_back(changes)


# --- reversal ---------------------------------------------------------------------------


async def reverse(
    settlement_id: str, request: ReversalRequest, ports: GatePorts,
    may_act_for: Callable[[str], None], reversed_at: dt.datetime | None = None,
) -> Given:
    """`may_act_for(institution_id)` raises if the caller may not reverse there.
    `reversed_at`: the reversal's time in the record, now unless the caller has its own (an
    NHSA return's sel_retn_time)."""
    view = await find_settlement(ports, settlement_id)
    if view is None:
        raise SettlementNotFound(f"settlement {settlement_id} is not recorded")
    may_act_for(view.institution_id)
    prior = await _prior_reversal(ports, request.reversal_id)
    if prior is not None:
        return Given(_replay_reversal(prior, settlement_id, request), "replayed")
    lines = await _lines_to_reverse(ports, view, request.line_nos)
    changes = await _release(ports, view, lines)
    released = [(c.canonical, c.line_no, -c.units if c.units else None) for c in changes]
    answer = orjson.dumps(reversal_answer(settlement_id, request.reversal_id,
                                          [code for code, _, _ in released]))
    event = ReversalEvent(settlement_id, request.reversal_id, request.line_nos, "gate",
                          (reversed_at or utcnow()).isoformat(),
                          ReversalEffects(released, msgspec.Raw(answer)))
    try:
        await _publish(ports, settlement_id, encode(event))
    except RecordUnavailable:
        await ports.store.give_back(changes)
        raise
    await ports.recent.put_reversal(request.reversal_id, settlement_id, request.line_nos, answer)
    return Given(answer, "reversed")


async def find_settlement(ports: GatePorts, settlement_id: str) -> SettlementView | None:
    """The gate's recent answer first (given, or given by now), then the record."""
    read = await ports.store.read_for_gate([], _gate_keys(settlement_id))
    recent, confirmed, _, _ = read.values
    if recent is not None:
        entry = _RECENT.decode(recent)
        given = confirmed is not None
        if not given:
            given = await _await_confirmation(ports, settlement_id, entry) == "confirmed"
        if given:
            return SettlementView(settlement_id, entry.institution_id, entry.patient_ref,
                                  bytes.fromhex(entry.body_hash), decode_lines(entry.lines),
                                  bytes(entry.answer), parse_settled_at(entry.settled_at))
    return await record.get_settlement(ports.lookups, settlement_id)


async def _prior_reversal(
    ports: GatePorts, reversal_id: str
) -> tuple[str, list[int] | None, bytes] | None:
    found = await record.get_reversal(ports.lookups, reversal_id)
    return found if found is not None else await ports.recent.reversal(reversal_id)


def _replay_reversal(
    prior: tuple[str, list[int] | None, bytes], settlement_id: str, request: ReversalRequest
) -> bytes:
    """The same reversal_id again: its first answer if it asked the same, else a conflict."""
    prior_settlement, prior_lines, answer = prior
    if prior_settlement != settlement_id or _normal(prior_lines) != _normal(request.line_nos):
        raise ReversalConflict(
            f"reversal {request.reversal_id} was used for another settlement or other lines")
    return orjson.dumps({**orjson.loads(answer), "replayed": True})


def _normal(line_nos: list[int] | None) -> list[int] | None:
    return None if line_nos is None else sorted(set(line_nos))


async def _lines_to_reverse(
    ports: GatePorts, view: SettlementView, requested: list[int] | None
) -> set[int]:
    """Requested lines that were paid and are not reversed yet; others release nothing."""
    known = {line.line_no for line in view.lines}
    unknown = set(requested or []) - known
    if unknown:
        raise UnknownLine(f"settlement {view.settlement_id} has no line {sorted(unknown)}")
    sets = await record.reversal_line_sets(ports.lookups, view.settlement_id)
    sets += await ports.recent.reversed_line_sets(view.settlement_id)
    done = view.reversed_lines(sets)
    paid = {line.line_no for line in view.lines if line.paid}
    return (set(requested) if requested is not None else known) & paid - done


async def _release(ports: GatePorts, view: SettlementView, lines: set[int]) -> list[ClaimChange]:
    """Give the claims back in the first-seen set; again if a code changed underneath."""
    payments = [p for p in view.payments() if p.line_no in lines]
    changes = await ports.store.change(
        [p.canonical for p in payments],
        partial(plan_release, view.settlement_id, payments, lines), MAX_ATTEMPTS,
        mark_releases=True)
    if changes is None:
        raise ClaimContention("trace codes are changing concurrently; retry", retry_after_s=1)
    return changes
