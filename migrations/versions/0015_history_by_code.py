"""code_events keyed by what reads it: an index on (code, event_at) instead of a five-column
primary key. Every history row comes from a settlement or reversal the record inserts once (a
copy fails on their own keys and its batch is decided again), so the wide unique index only
cost the consumers' batch a third of its PostgreSQL time for a guarantee held elsewhere.

Revision ID: 0015
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("pk_code_events", "code_events", type_="primary")
    op.create_index("ix_code_events_code_event_at", "code_events", ["code", "event_at"])


def downgrade() -> None:
    op.drop_index("ix_code_events_code_event_at", table_name="code_events")
    op.create_primary_key("pk_code_events", "code_events",
                          ["code", "event_at", "type", "settlement_id", "line_no"])
