"""All SQL over the record tables.

The consumers' batch and the gate's lookups go through asyncpg directly (no SQLAlchemy on
those paths): append-only rows by COPY, claims and counters by one set-based statement per
table over arrays, every lookup one statement for the whole batch. JSON columns travel as
the bytes they are (`open_record_connection` sets the codec), never decoded to write them.
A few cold reads for the API still take an SQLAlchemy session (`payment_count`,
`code_history`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.claims.schemas import FirstPayment
from service.flags.schemas import FlagRecord
from service.kit.pg_copy import CopyTable, copy_rows
from service.records.ledger import ClaimInsert, ClaimLedger
from service.records.models import CodeEvent, InstitutionStats
from service.records.schemas import (
    ReversalRecord,
    SettlementRecord,
    SettlementView,
    decode_lines,
)


class Querier(Protocol):
    """An asyncpg connection or pool: whatever runs one statement."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...


# The append-only rows as COPY writes them: columns and their kinds (service/kit/pg_copy.py).
SETTLEMENTS = CopyTable("settlements", (
    "settlement_id", "institution_id", "settled_at", "patient_ref", "source", "body_hash",
    "decision", "enforced", "lines", "answer"), "ttzttytbjj")  # lines, answer: json
EVENTS = CopyTable("code_events", (
    "code", "event_at", "type", "settlement_id", "line_no", "institution_id", "patient_ref",
    "units", "duplicate", "reversal_id"), "tzttittibt")
CLAIMS = CopyTable("code_claims", (
    "code", "settlement_id", "line_no", "institution_id", "paid_at", "first_seen_at"), "ttitzz")
FLAGS = CopyTable("flags", (
    "flag_id", "kind", "severity", "trace_code", "institution_id", "settlement_id", "line_no",
    "settled_at", "detected_at", "patient_ref", "first_payment"), "ttttttizztJ")


async def json_as_bytes(connection: asyncpg.Connection) -> None:
    """json and jsonb in and out as their UTF-8 text (bytes), in the binary protocol: the
    record stores JSON the gate or a consumer encoded once, and hands it back undecoded."""
    await connection.set_type_codec("jsonb", schema="pg_catalog", format="binary",
                                    encoder=lambda raw: b"\x01" + raw,
                                    decoder=lambda raw: raw[1:])
    await connection.set_type_codec("json", schema="pg_catalog", format="binary",
                                    encoder=bytes, decoder=bytes)


# --- what the record holds already -------------------------------------------------------


async def recorded(
    querier: Querier, settlement_ids: Sequence[str], reversal_ids: Sequence[str]
) -> tuple[set[str], set[str]]:
    """Which of these settlements and reversals the record holds (one statement)."""
    rows = await querier.fetch(
        "SELECT 's', settlement_id FROM settlements WHERE settlement_id = ANY($1::text[]) "
        "UNION ALL SELECT 'r', reversal_id FROM reversals WHERE reversal_id = ANY($2::text[])",
        list(settlement_ids), list(reversal_ids))
    return ({row[1] for row in rows if row[0] == "s"}, {row[1] for row in rows if row[0] == "r"})


async def settlement_views(
    querier: Querier, settlement_ids: Sequence[str]
) -> dict[str, tuple[SettlementView, list[list[int] | None]]]:
    """Recorded settlements with the line sets reversed so far."""
    if not settlement_ids:
        return {}
    rows = await querier.fetch(
        "SELECT s.settlement_id, s.institution_id, s.patient_ref, s.body_hash, s.lines, "
        "s.answer, s.settled_at, coalesce((SELECT array_agg(coalesce(r.line_nos::text, 'null')) "
        "FROM reversals r WHERE r.settlement_id = s.settlement_id), '{}') "
        "FROM settlements s WHERE s.settlement_id = ANY($1::text[])", list(settlement_ids))
    return {row[0]: (_view(row), [msgspec.json.decode(x) for x in row[7]]) for row in rows}


def _view(row: Any) -> SettlementView:
    return SettlementView(row[0], row[1], row[2], bytes(row[3]), decode_lines(row[4]),
                          bytes(row[5]), row[6])


async def get_settlement(querier: Querier, settlement_id: str) -> SettlementView | None:
    row = await querier.fetchrow(
        "SELECT settlement_id, institution_id, patient_ref, body_hash, lines, answer, "
        "settled_at FROM settlements WHERE settlement_id = $1", settlement_id)
    return None if row is None else _view(row)


async def first_payments(querier: Querier, codes: Sequence[str]) -> dict[str, FirstPayment]:
    if not codes:
        return {}
    # One index probe of one hash partition a code, pruned as it runs: `code = ANY($1)` on
    # the partitioned table probed every partition's index with the whole array (3x the CPU).
    rows = await querier.fetch(
        "SELECT c.code, c.settlement_id, c.institution_id, c.paid_at "
        "FROM unnest($1::text[]) AS wanted(code) CROSS JOIN LATERAL (SELECT * FROM "
        "code_claims k WHERE k.code = wanted.code LIMIT 1) c", list(codes))
    return {row[0]: FirstPayment(row[1], row[2], row[3]) for row in rows}


class ClaimOwner(msgspec.Struct, frozen=True, gc=False):
    code: str
    settlement_id: str
    line_no: int
    institution_id: str
    institution_no: int
    paid_at: dt.datetime
    units_used: int | None
    pack_size: int | None

    @property
    def first_payment(self) -> FirstPayment:
        return FirstPayment(self.settlement_id, self.institution_id, self.paid_at)


async def claim_owners(querier: Querier, codes: Sequence[str]) -> dict[str, ClaimOwner]:
    rows = await querier.fetch(
        "SELECT c.code, c.settlement_id, c.line_no, c.institution_id, i.number, c.paid_at, "
        "c.units_used, c.pack_size FROM unnest($1::text[]) AS wanted(code) CROSS JOIN LATERAL "
        "(SELECT * FROM code_claims k WHERE k.code = wanted.code LIMIT 1) c "
        "JOIN institutions i USING (institution_id)", list(codes))  # as first_payments
    return {row[0]: ClaimOwner(*row) for row in rows}


async def get_reversal(
    querier: Querier, reversal_id: str
) -> tuple[str, list[int] | None, bytes] | None:
    row = await querier.fetchrow(
        "SELECT settlement_id, line_nos, answer FROM reversals WHERE reversal_id = $1",
        reversal_id)
    if row is None:
        return None
    return row[0], msgspec.json.decode(row[1]) if row[1] is not None else None, bytes(row[2])


async def reversal_line_sets(querier: Querier, settlement_id: str) -> list[list[int] | None]:
    rows = await querier.fetch(
        "SELECT line_nos FROM reversals WHERE settlement_id = $1", settlement_id)
    return [msgspec.json.decode(row[0]) if row[0] is not None else None for row in rows]


async def unpublished_flags(querier: Querier, settlement_ids: Sequence[str]) -> list[FlagRecord]:
    """Flags of these settlements that were recorded but never reached the flags topic."""
    rows = await querier.fetch(
        "SELECT flag_id, kind, severity, trace_code, institution_id, settlement_id, line_no, "
        "settled_at, detected_at, patient_ref, first_payment FROM flags "
        "WHERE settlement_id = ANY($1::text[]) AND NOT published", list(settlement_ids))
    return [FlagRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                       row[9], _first(row[10])) for row in rows]


def _first(raw: bytes | None) -> FirstPayment | None:
    return None if raw is None else msgspec.json.decode(raw, type=FirstPayment)


async def mark_published(querier: Querier, flag_ids: Sequence[str]) -> None:
    if flag_ids:
        await querier.execute("UPDATE flags SET published = true WHERE flag_id = ANY($1::text[])",
                              list(flag_ids))


# --- writing a batch (inside the caller's transaction) -----------------------------------


async def insert_settlements(
    connection: asyncpg.Connection, records: Sequence[SettlementRecord]
) -> None:
    """COPY: the batch holds only settlements the record did not (a copy another consumer
    wrote meanwhile fails the transaction, and the batch is decided again without it)."""
    await copy_rows(connection, SETTLEMENTS, [
        (r.settlement_id, r.institution_id, r.settled_at, r.patient_ref, r.source, r.body_hash,
         r.outcome, r.enforced, r.lines, r.answer) for r in records])


async def insert_events(connection: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Every payment and reversal of a code (rows in EVENTS' column order)."""
    await copy_rows(connection, EVENTS, rows)


async def write_claims(connection: asyncpg.Connection, ledger: ClaimLedger) -> set[str]:
    """Releases, then first payments through the unique key (the final arbiter), then split
    units as deltas. Returns the codes whose first payment another settlement holds."""
    await _delete_claims(connection, ledger.deletes)
    taken = await _insert_claims(connection, list(ledger.inserts.values()))
    await _add_split_units(connection, ledger)
    return taken


async def _delete_claims(connection: asyncpg.Connection, deletes: list[tuple[str, str]]) -> None:
    if deletes:
        codes, settlements = zip(*deletes, strict=True)
        await connection.execute(
            "DELETE FROM code_claims c USING unnest($1::text[], $2::text[]) AS d(code, sid) "
            "WHERE c.code = d.code AND c.settlement_id = d.sid", list(codes), list(settlements))


async def _insert_claims(connection: asyncpg.Connection, claims: list[ClaimInsert]) -> set[str]:
    """By COPY, nearly always: a first payment nobody else holds. If one is held (Redis had
    lost it, two consumers raced) the COPY fails as a whole, back to its savepoint, and the
    claims go through ON CONFLICT instead, which says which codes were taken."""
    if not claims:
        return set()
    rows = [(c.code, c.settlement_id, c.line_no, c.institution_id, c.paid_at, c.paid_at)
            for c in claims]
    # In code order, each partition's primary key is walked left to right instead of at
    # random: 15 % less PostgreSQL for the COPY, for 0.25 us a code of sorting here.
    rows.sort()
    try:
        async with connection.transaction():  # a savepoint inside the batch's transaction
            await copy_rows(connection, CLAIMS, rows)
        return set()
    except asyncpg.UniqueViolationError:
        return await _insert_claims_contested(connection, claims)


async def _insert_claims_contested(
    connection: asyncpg.Connection, claims: list[ClaimInsert]
) -> set[str]:
    inserted = await connection.fetch(
        "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
        "first_seen_at) SELECT c, s, l, i, p, p FROM unnest($1::text[], $2::text[], "
        "$3::int[], $4::text[], $5::timestamptz[]) AS t(c, s, l, i, p) "
        "ON CONFLICT DO NOTHING RETURNING code",
        [c.code for c in claims], [c.settlement_id for c in claims],
        [c.line_no for c in claims], [c.institution_id for c in claims],
        [c.paid_at for c in claims])
    return {c.code for c in claims} - {row[0] for row in inserted}


async def _add_split_units(connection: asyncpg.Connection, ledger: ClaimLedger) -> None:
    """Units add up as deltas, so consumers writing in any order reach the same total; the
    first sale opens the pack; a pack whose units all came back is no longer claimed."""
    deltas = list(ledger.split.values())
    if not deltas:
        return
    totals = await connection.fetch(
        "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
        "first_seen_at, units_used, pack_size) SELECT c, s, l, i, p, p, u, k FROM "
        "unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::int[], "
        "$7::int[]) AS t(c, s, l, i, p, u, k) ON CONFLICT (code) DO UPDATE "
        "SET units_used = code_claims.units_used + excluded.units_used "
        "RETURNING code, units_used",
        [d.code for d in deltas], [d.settlement_id for d in deltas],
        [d.line_no for d in deltas], [d.institution_id for d in deltas],
        [d.paid_at for d in deltas], [d.units for d in deltas], [d.pack_size for d in deltas])
    # Only a pack whose units all came back has a row to drop: most batches have none.
    emptied = [code for code, units_used in totals if units_used <= 0]
    if emptied:
        await connection.execute(
            "DELETE FROM code_claims WHERE code = ANY($1::text[]) AND units_used <= 0", emptied)


async def mark_duplicate_payments(
    connection: asyncpg.Connection, losers: Sequence[ClaimInsert]
) -> None:
    """Payments the arbiter found were not first after all (Redis had lost the claim)."""
    if losers:
        await connection.execute(
            "UPDATE code_events e SET duplicate = true FROM unnest($1::text[], "
            "$2::timestamptz[], $3::text[], $4::int[]) AS d(code, at, sid, line) "
            "WHERE e.code = d.code AND e.event_at = d.at AND e.type = 'payment' "
            "AND e.settlement_id = d.sid AND e.line_no = d.line",
            [c.code for c in losers], [c.paid_at for c in losers],
            [c.settlement_id for c in losers], [c.line_no for c in losers])


async def insert_flags(connection: asyncpg.Connection, flags: Sequence[FlagRecord]) -> None:
    """The flags of settlements new to the record, so new themselves (their ids name the
    settlement): by COPY, every one of them."""
    await copy_rows(connection, FLAGS, [
        (f.flag_id, f.kind, f.severity, f.trace_code, f.institution_id, f.settlement_id,
         f.line_no, f.settled_at, f.detected_at, f.patient_ref, _json_bytes(f.first_payment))
        for f in flags])


def _json_bytes(first: FirstPayment | None) -> bytes | None:
    return None if first is None else msgspec.json.encode(first.to_json())


async def insert_reversals(
    connection: asyncpg.Connection, reversals: Sequence[ReversalRecord]
) -> None:
    if reversals:
        await connection.executemany(
            "INSERT INTO reversals (reversal_id, settlement_id, line_nos, reversed_at, answer) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(r.reversal_id, r.settlement_id,
              None if r.line_nos is None else msgspec.json.encode(r.line_nos),
              r.reversed_at, r.answer) for r in reversals])


async def add_payment_counts(connection: asyncpg.Connection, counts: Counter[str]) -> None:
    """Last in a transaction, in a fixed order: the hot counter rows are then locked only by
    transactions about to commit, so two consumers cannot deadlock on them."""
    if counts:
        ids = sorted(counts)
        await connection.execute(
            "INSERT INTO institution_stats (institution_id, payments) SELECT * FROM "
            "unnest($1::text[], $2::bigint[]) ON CONFLICT (institution_id) DO UPDATE "
            "SET payments = institution_stats.payments + excluded.payments",
            ids, [counts[i] for i in ids])


# --- cold reads for the API (SQLAlchemy session) -----------------------------------------


async def payment_count(session: AsyncSession, institution_id: str) -> int:
    query = select(InstitutionStats.payments).where(
        InstitutionStats.institution_id == institution_id
    )
    return (await session.execute(query)).scalar_one_or_none() or 0


async def code_history(session: AsyncSession, code: str) -> list[CodeEvent]:
    """Every event of one code: each monthly partition answers with one probe of its hash
    index on the code."""
    query = select(CodeEvent).where(CodeEvent.code == code).order_by(
        CodeEvent.event_at, CodeEvent.recorded_at
    )
    return list((await session.execute(query)).scalars())
