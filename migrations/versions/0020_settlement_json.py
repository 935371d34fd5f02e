"""settlements.lines and settlements.answer as json, not jsonb: the record stores JSON the gate
or a consumer encoded once and hands it back as it came (the replayed answer, the lines a
reversal or a history reads), so jsonb's parse into its binary form on every insert was pure
cost. It was the largest of the stream's PostgreSQL costs: 5.6-6.7 us of PostgreSQL CPU a
trace code for the settlements COPY as jsonb, 2.9-3.4 as json (measured on 200k codes). The
one query that walks the lines in SQL (NHSA 3513, an institution's sales) reads json as well.

Changing the type rewrites the table: on a large record, run it in a maintenance window.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE settlements ALTER COLUMN lines TYPE json USING lines::json, "
               "ALTER COLUMN answer TYPE json USING answer::json")


def downgrade() -> None:
    op.execute("ALTER TABLE settlements ALTER COLUMN lines TYPE jsonb USING lines::jsonb, "
               "ALTER COLUMN answer TYPE jsonb USING answer::jsonb")
