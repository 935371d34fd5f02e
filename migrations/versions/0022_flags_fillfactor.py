"""flags pages keep half their room free, so that marking a flag published stays in its page.

A consumer COPYs a batch's flags, then (once they are on the topic) sets `published` on them.
COPY fills each page; the update then found no room for the row's new version, which went to
another page with a new entry in every one of the table's ten indexes: 30 us of PostgreSQL a
flag, 1.38 us a trace code of the stream's 11.3 (12% of it, for 4.5% of the rows; measured by
replaying a full benchmark's batches). With half of each page free the new version stays
beside the old one and no index changes (a HOT update): the update cost 0.18 us a code, and
the table shrank from 11.3 to 9.2 MB, its indexes no longer holding two entries a flag.
Half, because every flag is updated exactly once, soon after it is written: each row on a
page needs room for one copy of itself. Neither `published` nor anything an update of it
touches may join an index, or the updates stop being HOT (tests/integration/test_flags_hot.py).

Only pages written from now on keep the room; pages written before stay as they are.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 50


def upgrade() -> None:
    op.execute(f"ALTER TABLE flags SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE flags RESET (fillfactor)")
