"""The record: institutions, API keys, settlements, code events, claims, reversals, flags.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Monthly partitions of code_events from the first go-live year; later months are added by
# `ensure_code_event_partitions` (records repository) ahead of time, and anything outside the
# range lands in the default partition instead of failing a settlement.
FIRST_MONTH = dt.date(2025, 1, 1)
MONTHS = 36
CLAIM_PARTITIONS = 16

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    _institutions_and_keys()
    _settlements()
    _code_events()
    _code_claims()
    _reversals_and_stats()
    _flags()


def _institutions_and_keys() -> None:
    op.create_table(
        "institutions",
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("number", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("go_live_override", sa.Date(), nullable=True),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('retail_pharmacy', 'primary', 'secondary', 'tertiary')",
            name=op.f("ck_institutions_kind"),
        ),
        sa.CheckConstraint(
            "char_length(institution_id) = 12", name=op.f("ck_institutions_institution_id_length")
        ),
        sa.PrimaryKeyConstraint("institution_id", name=op.f("pk_institutions")),
        sa.UniqueConstraint("number", name=op.f("uq_institutions_number")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("institution_id", sa.String(12), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'pos', 'regulator', 'ops')", name=op.f("ck_api_keys_role")
        ),
        sa.CheckConstraint(
            "(role = 'pos') = (institution_id IS NOT NULL)",
            name=op.f("ck_api_keys_pos_has_institution"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.institution_id"],
            name=op.f("fk_api_keys_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )


def _settlements() -> None:
    op.create_table(
        "settlements",
        sa.Column("settlement_id", sa.String(64), nullable=False),
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("settled_at", TS, nullable=False),
        sa.Column("patient_ref", sa.String(32), nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("body_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("decision", sa.String(10), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("answer", postgresql.JSONB(), nullable=False),
        sa.Column("recorded_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("source IN ('gate', 'stream')", name=op.f("ck_settlements_source")),
        sa.CheckConstraint(
            "decision IN ('pay', 'partial', 'reject')", name=op.f("ck_settlements_decision")
        ),
        sa.PrimaryKeyConstraint("settlement_id", name=op.f("pk_settlements")),
    )
    op.create_index(
        op.f("ix_settlements_institution_id"), "settlements", ["institution_id"], unique=False
    )


def _code_events() -> None:
    op.create_table(
        "code_events",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("event_at", TS, nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("settlement_id", sa.String(64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("patient_ref", sa.String(32), nullable=True),
        sa.Column("units", sa.Integer(), nullable=True),
        sa.Column("duplicate", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("reversal_id", sa.String(64), nullable=True),
        sa.Column("recorded_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("type IN ('payment', 'reversal')", name=op.f("ck_code_events_type")),
        sa.PrimaryKeyConstraint(
            "code", "event_at", "type", "settlement_id", "line_no", name=op.f("pk_code_events")
        ),
        postgresql_partition_by="RANGE (event_at)",
    )
    for month in range(MONTHS):
        start = _add_months(FIRST_MONTH, month)
        end = _add_months(FIRST_MONTH, month + 1)
        op.execute(
            f"CREATE TABLE code_events_y{start:%Y}m{start:%m} PARTITION OF code_events "
            f"FOR VALUES FROM ('{start}T00:00:00+08:00') TO ('{end}T00:00:00+08:00')"
        )
    op.execute("CREATE TABLE code_events_default PARTITION OF code_events DEFAULT")


def _add_months(day: dt.date, months: int) -> dt.date:
    years, month0 = divmod(day.month - 1 + months, 12)
    return dt.date(day.year + years, month0 + 1, 1)


def _code_claims() -> None:
    op.create_table(
        "code_claims",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("settlement_id", sa.String(64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("paid_at", TS, nullable=False),
        sa.Column("units_used", sa.Integer(), nullable=True),
        sa.Column("pack_size", sa.Integer(), nullable=True),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_code_claims")),
        postgresql_partition_by="HASH (code)",
    )
    for part in range(CLAIM_PARTITIONS):
        op.execute(
            f"CREATE TABLE code_claims_p{part:02d} PARTITION OF code_claims "
            f"FOR VALUES WITH (MODULUS {CLAIM_PARTITIONS}, REMAINDER {part})"
        )


def _reversals_and_stats() -> None:
    op.create_table(
        "reversals",
        sa.Column("reversal_id", sa.String(64), nullable=False),
        sa.Column("settlement_id", sa.String(64), nullable=False),
        sa.Column("line_nos", postgresql.JSONB(), nullable=True),
        sa.Column("reversed_at", TS, nullable=False),
        sa.Column("answer", postgresql.JSONB(), nullable=False),
        sa.Column("recorded_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("reversal_id", name=op.f("pk_reversals")),
    )
    op.create_index(
        op.f("ix_reversals_settlement_id"), "reversals", ["settlement_id"], unique=False
    )
    op.create_table(
        "institution_stats",
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("payments", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("institution_id", name=op.f("pk_institution_stats")),
    )


def _flags() -> None:
    op.create_table(
        "flags",
        sa.Column("flag_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "tx",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("trace_code", sa.String(64), nullable=True),
        sa.Column("institution_id", sa.String(12), nullable=False),
        sa.Column("settlement_id", sa.String(64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("settled_at", TS, nullable=False),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("patient_ref", sa.String(32), nullable=True),
        sa.Column("first_payment", postgresql.JSONB(), nullable=True),
        sa.Column("published", sa.Boolean(), server_default="false", nullable=False),
        sa.CheckConstraint(
            "kind IN ('duplicate_payment', 'split_overuse', 'split_cross_institution', "
            "'missing_code', 'invalid_code', 'quantity_mismatch')",
            name=op.f("ck_flags_kind"),
        ),
        sa.CheckConstraint(
            "severity IN ('high', 'medium', 'low')", name=op.f("ck_flags_severity")
        ),
        sa.PrimaryKeyConstraint("flag_id", name=op.f("pk_flags")),
        sa.UniqueConstraint("seq", name=op.f("uq_flags_seq")),
        sa.UniqueConstraint(
            "kind",
            "settlement_id",
            "line_no",
            "trace_code",
            name=op.f("uq_flags_kind_settlement_id_line_no_trace_code"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index("ix_flags_detected_at_seq", "flags", ["detected_at", "seq"], unique=False)
    op.create_index("ix_flags_institution_id_kind", "flags", ["institution_id", "kind"])
    op.create_index("ix_flags_tx_seq", "flags", ["tx", "seq"], unique=False)
    op.create_index("ix_flags_trace_code", "flags", ["trace_code"], unique=False)
    op.create_index("ix_flags_settlement_id", "flags", ["settlement_id"], unique=False)


def downgrade() -> None:
    for table in (
        "flags",
        "institution_stats",
        "reversals",
        "code_claims",
        "code_events",
        "settlements",
        "api_keys",
        "institutions",
    ):
        op.drop_table(table)
