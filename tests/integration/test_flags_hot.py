"""Marking flags published after they were COPYed stays in their pages (migration 0022): a HOT
update, no new entry in any of the flags' indexes. With full pages (fillfactor 100) nearly
every such update moved the row and wrote all ten indexes again."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from service.flags.schemas import FlagDraft, FlagKind, FlagRecord
from service.flags.service import build_flag
from service.records import repository as record
from service.records.repository import json_as_bytes
from service.settings import Settings
from tests.factories import institution_id

FLAGS = 600  # some dozens of pages: the page a COPY leaves full is the case that mattered


async def test_marking_a_batchs_flags_published_is_a_hot_update(settings: Settings) -> None:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    await json_as_bytes(connection)
    try:
        flags = _flags(FLAGS)
        async with connection.transaction():  # as a consumer's batch writes them
            await record.insert_flags(connection, flags)
        async with connection.transaction():  # as FlagMarks marks them, once published
            await record.mark_published(connection, [flag.flag_id for flag in flags])
            counts = await connection.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                "WHERE relname = 'flags'")
    finally:
        await connection.close()
    assert (counts["n_tup_upd"], counts["n_tup_hot_upd"]) == (FLAGS, FLAGS)


def _flags(count: int) -> list[FlagRecord]:
    at = dt.datetime(2025, 6, 1, 9, 30, tzinfo=dt.UTC)
    institution, batch = institution_id(), uuid.uuid4().hex[:10]
    return [build_flag(FlagDraft(FlagKind.DUPLICATE_PAYMENT, "high", 1, f"8{n:019d}"),
                       settlement_id=f"HOT-{batch}-{n}", institution_id=institution,
                       settled_at=at, detected_at=at, patient_ref="p" * 32)
            for n in range(count)]
