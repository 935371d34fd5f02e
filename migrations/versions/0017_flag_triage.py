"""Flag triage (CONTRACT §7): a status, a resolution and updated_at on every flag, and the
history of each case.

The new columns have constant or stable defaults, so PostgreSQL adds them without rewriting the
table and the consumers' insert of a detection is unchanged. The two partial indexes carry the
case summaries (open cases by age, closed cases by resolution) on large flag tables; on a live
production table create them CONCURRENTLY by hand first (this migration then finds them).

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
STATUSES = "status IN ('new', 'investigating', 'escalated', 'closed')"
RESOLUTIONS = "resolution IN ('confirmed_fraud', 'legitimate', 'data_error')"


def upgrade() -> None:
    _flag_columns()
    _flag_history()


def _flag_columns() -> None:
    op.add_column("flags", sa.Column("status", sa.String(16), server_default="new",
                                     nullable=False))
    op.add_column("flags", sa.Column("resolution", sa.String(20), nullable=True))
    op.add_column("flags", sa.Column("updated_at", TS, server_default=sa.func.now(),
                                     nullable=False))
    op.create_check_constraint(op.f("ck_flags_status"), "flags", STATUSES)
    op.create_check_constraint(op.f("ck_flags_resolution"), "flags", RESOLUTIONS)
    op.create_check_constraint(
        op.f("ck_flags_closed_resolved"), "flags",
        "(status = 'closed') = (resolution IS NOT NULL)",
    )
    op.create_index(
        "ix_flags_open_institution_id_detected_at", "flags", ["institution_id", "detected_at"],
        postgresql_where=sa.text("status <> 'closed'"), if_not_exists=True,
    )
    op.create_index(
        "ix_flags_closed_institution_id_resolution", "flags", ["institution_id", "resolution"],
        postgresql_where=sa.text("status = 'closed'"), if_not_exists=True,
    )


def _flag_history() -> None:
    op.create_table(
        "flag_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("flag_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolution", sa.String(20), nullable=True),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("actor_key_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_role", sa.String(20), nullable=False),
        sa.Column("at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(STATUSES, name=op.f("ck_flag_history_status")),
        sa.CheckConstraint(RESOLUTIONS, name=op.f("ck_flag_history_resolution")),
        sa.ForeignKeyConstraint(["flag_id"], ["flags.flag_id"],
                                name=op.f("fk_flag_history_flag_id_flags")),
        sa.ForeignKeyConstraint(["actor_key_id"], ["api_keys.id"],
                                name=op.f("fk_flag_history_actor_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_history")),
    )
    op.create_index("ix_flag_history_flag_id_id", "flag_history", ["flag_id", "id"])


def downgrade() -> None:
    op.drop_table("flag_history")
    op.drop_index("ix_flags_closed_institution_id_resolution", table_name="flags")
    op.drop_index("ix_flags_open_institution_id_detected_at", table_name="flags")
    for name in ("closed_resolved", "resolution", "status"):
        op.drop_constraint(op.f(f"ck_flags_{name}"), "flags", type_="check")
    for column in ("updated_at", "resolution", "status"):
        op.drop_column("flags", column)
