"""Baseline (d)'s SQL: every statement a batch sends, on one asyncpg connection.

The first-seen decision is `FIRST_SEEN`: the batch's codes, COPYed into a temporary table,
go into code_claims by one INSERT … ON CONFLICT DO NOTHING (the first payable row of each
code, in Kafka order; the unique key says which codes were new, each routed to its hash
partition), and the same statement returns, for every staged code that was not new, the
claim that was there before (its snapshot precedes the insert). That lookup is one probe
of one partition's index per code (LIMIT 1 keeps the planner from turning the lateral
subquery into a join that scans every partition)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from loadtest.baselines.postgres_batched.rules import Claim, Recorded
from service.claims.schemas import FirstPayment
from service.flags.schemas import FlagRecord
from service.kit.pg_copy import CopyTable, copy_rows
from service.records.repository import EVENTS, FLAGS, SETTLEMENTS
from service.records.schemas import decode_lines

STAGE = "lt_claim_stage"
# The record's own tables as tracegate writes them (the same rows, the same binary COPY).
STAGED = CopyTable(STAGE, ("seq", "code", "settlement_id", "line_no", "institution_id",
                           "paid_at", "units", "pack_size", "payable"), "ittitziib")

FIRST_SEEN = f"""
WITH new AS (
    INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at,
                             first_seen_at, units_used, pack_size)
    SELECT DISTINCT ON (code) code, settlement_id, line_no, institution_id, paid_at, paid_at,
           units, pack_size
    FROM {STAGE} WHERE payable ORDER BY code, seq
    ON CONFLICT (code) DO NOTHING
    RETURNING code),
old AS (
    SELECT s.code, bool_or(s.payable) AS payable FROM {STAGE} s
    WHERE NOT EXISTS (SELECT FROM new WHERE new.code = s.code) GROUP BY s.code)
SELECT old.code, old.payable, c.settlement_id, c.line_no, c.institution_id, c.paid_at,
       c.units_used, c.pack_size
FROM old LEFT JOIN LATERAL (
    SELECT * FROM code_claims WHERE code_claims.code = old.code LIMIT 1) c ON true
"""


class ClaimRace(Exception):
    """Another transaction claimed a code of this batch after the batch's snapshot: the batch
    is decided again (it then sees that claim)."""


async def open_connection(dsn: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn)
    # JSON in and out as its UTF-8 bytes (binary jsonb is a version byte and the text).
    await connection.set_type_codec("jsonb", schema="pg_catalog", format="binary",
                                    encoder=lambda raw: b"\x01" + raw,
                                    decoder=lambda raw: raw[1:])
    await connection.execute(
        f"CREATE TEMPORARY TABLE {STAGE} (seq int, code text, settlement_id text, line_no int,"
        " institution_id text, paid_at timestamptz, units int, pack_size int, payable bool)"
        " ON COMMIT DELETE ROWS")
    return connection


async def institutions(connection: asyncpg.Connection, ids: Sequence[str]) -> list[Any]:
    return list(await connection.fetch(
        "SELECT institution_id, kind, go_live_override FROM institutions "
        "WHERE institution_id = ANY($1::text[])", list(ids)))


async def held(
    connection: asyncpg.Connection, settlement_ids: Sequence[str],
    reversal_ids: Sequence[str], targets: Sequence[str],
) -> tuple[set[str], set[str], dict[str, Recorded]]:
    """Which settlements and reversals the record holds already, and the recorded
    settlements the batch's reversals name (one statement)."""
    rows = await connection.fetch(
        "SELECT 's', settlement_id, NULL, NULL, NULL::json FROM settlements "
        "WHERE settlement_id = ANY($1::text[]) UNION ALL "
        "SELECT 'r', reversal_id, NULL, NULL, NULL FROM reversals "
        "WHERE reversal_id = ANY($2::text[]) UNION ALL "
        "SELECT 't', settlement_id, institution_id, patient_ref, lines FROM settlements "
        "WHERE settlement_id = ANY($3::text[])",
        list(settlement_ids), list(reversal_ids), list(targets))
    return ({row[1] for row in rows if row[0] == "s"}, {row[1] for row in rows if row[0] == "r"},
            {row[1]: Recorded(row[2], row[3], decode_lines(row[4]))
             for row in rows if row[0] == "t"})


async def first_seen(connection: asyncpg.Connection, staged: list[tuple[Any, ...]]
                     ) -> dict[str, Claim]:
    """Stage the batch's codes and claim the new ones; returns the claims held before the
    batch of the codes that were not new."""
    if not staged:
        return {}
    await copy_rows(connection, STAGED, staged)
    before: dict[str, Claim] = {}
    for code, payable, *claim in await connection.fetch(FIRST_SEEN):
        if claim[0] is not None:
            before[code] = Claim(*claim)
        elif payable:
            raise ClaimRace(f"{code} was claimed by a transaction this batch could not see")
    return before


async def correct_claims(connection: asyncpg.Connection, deletes: list[str],
                         upserts: dict[str, Claim]) -> None:
    """Where the rules ended other than the first-seen insert left a code."""
    if deletes:
        await connection.execute("DELETE FROM code_claims WHERE code = ANY($1::text[])",
                                 deletes)
    if upserts:
        claims = list(upserts.values())
        await connection.execute(
            "INSERT INTO code_claims (code, settlement_id, line_no, institution_id, paid_at, "
            "first_seen_at, units_used, pack_size) SELECT c, s, l, i, p, p, u, k FROM unnest("
            "$1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::int[], "
            "$7::int[]) AS t(c, s, l, i, p, u, k) ON CONFLICT (code) DO UPDATE SET "
            "first_seen_at = CASE WHEN (code_claims.settlement_id, code_claims.line_no) = "
            "(excluded.settlement_id, excluded.line_no) THEN code_claims.first_seen_at "
            "ELSE excluded.first_seen_at END, settlement_id = excluded.settlement_id, "
            "line_no = excluded.line_no, institution_id = excluded.institution_id, "
            "paid_at = excluded.paid_at, units_used = excluded.units_used, "
            "pack_size = excluded.pack_size",
            list(upserts), [c.settlement_id for c in claims], [c.line_no for c in claims],
            [c.institution_id for c in claims], [c.paid_at for c in claims],
            [c.units_used for c in claims], [c.pack_size for c in claims])


async def write(connection: asyncpg.Connection, settlements: list[tuple[Any, ...]],
                events: list[tuple[Any, ...]], flags: list[FlagRecord]) -> None:
    """The append-only rows, by COPY."""
    await copy_rows(connection, SETTLEMENTS, settlements)
    await copy_rows(connection, EVENTS, events)
    await copy_rows(connection, FLAGS, [_flag_row(f) for f in flags])


def _flag_row(flag: FlagRecord) -> tuple[Any, ...]:
    first = flag.first_payment
    return (flag.flag_id, flag.kind, flag.severity, flag.trace_code, flag.institution_id,
            flag.settlement_id, flag.line_no, flag.settled_at, flag.detected_at,
            flag.patient_ref, None if first is None else msgspec.json.encode(first.to_json()))


async def write_reversals(connection: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        ids, sids, at, answers = zip(*rows, strict=True)
        await connection.execute(
            "INSERT INTO reversals (reversal_id, settlement_id, reversed_at, answer) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[]) "
            "ON CONFLICT DO NOTHING", list(ids), list(sids), list(at), list(answers))



async def unpublished(connection: asyncpg.Connection, settlement_ids: Sequence[str]
                      ) -> list[FlagRecord]:
    """Flags of recorded settlements that never reached the topic (a crash after commit)."""
    rows = await connection.fetch(
        "SELECT flag_id, kind, severity, trace_code, institution_id, settlement_id, line_no, "
        "settled_at, detected_at, patient_ref, first_payment FROM flags "
        "WHERE settlement_id = ANY($1::text[]) AND NOT published", list(settlement_ids))
    return [FlagRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                       row[9], None if row[10] is None else
                       msgspec.json.decode(row[10], type=FirstPayment)) for row in rows]


async def mark_published(connection: asyncpg.Connection, flag_ids: Sequence[str]) -> None:
    if flag_ids:
        await connection.execute(
            "UPDATE flags SET published = true WHERE flag_id = ANY($1::text[])", list(flag_ids))
