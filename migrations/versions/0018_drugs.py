"""The drug catalogue (NHSA split rows take their pack size from it), and the settlements index
the NHSA sales query (3513) reads an institution's sales by.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drugs",
        sa.Column("med_list_codg", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("pack_size", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("pack_size > 0", name=op.f("ck_drugs_pack_size_positive")),
        sa.PrimaryKeyConstraint("med_list_codg", name=op.f("pk_drugs")),
    )
    # An institution's sales in a time range, in time order, is one index range scan: the
    # index on institution_id alone read every sale the institution ever made and sorted
    # them. It serves every lookup the old index did (its leading column), so it replaces
    # it rather than adding a second index to each settlement's write.
    op.create_index(
        op.f("ix_settlements_institution_id_settled_at"), "settlements",
        ["institution_id", "settled_at"], unique=False,
    )
    op.drop_index(op.f("ix_settlements_institution_id"), table_name="settlements")


def downgrade() -> None:
    op.create_index(
        op.f("ix_settlements_institution_id"), "settlements", ["institution_id"], unique=False
    )
    op.drop_index(op.f("ix_settlements_institution_id_settled_at"), table_name="settlements")
    op.drop_table("drugs")
