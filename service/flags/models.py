from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.database import Base

FLAG_KINDS = (
    "duplicate_payment",
    "split_overuse",
    "split_cross_institution",
    "missing_code",
    "invalid_code",
    "quantity_mismatch",
)
# CONTRACT §7: every flag is a case. Open statuses first; `closed` needs a resolution.
FLAG_STATUSES = ("new", "investigating", "escalated", "closed")
RESOLUTIONS = ("confirmed_fraud", "legitimate", "data_error")


class Flag(Base):
    """A finding for operations and regulators. `flag_id` is derived from the natural key, so the
    gate can name a flag before the consumer records it and a replay can never make a second."""

    __tablename__ = "flags"
    __table_args__ = (
        UniqueConstraint(
            "kind", "settlement_id", "line_no", "trace_code", postgresql_nulls_not_distinct=True
        ),
        CheckConstraint(f"kind IN {FLAG_KINDS!r}", name="kind"),
        CheckConstraint("severity IN ('high', 'medium', 'low')", name="severity"),
        Index("ix_flags_detected_at_seq", "detected_at", "seq"),
        Index("ix_flags_institution_id_kind", "institution_id", "kind"),
        Index("ix_flags_tx_seq", "tx", "seq"),
        Index("ix_flags_trace_code", "trace_code"),
        Index("ix_flags_settlement_id", "settlement_id"),
        CheckConstraint(f"status IN {FLAG_STATUSES!r}", name="status"),
        CheckConstraint(f"resolution IN {RESOLUTIONS!r}", name="resolution"),
        CheckConstraint("(status = 'closed') = (resolution IS NOT NULL)", name="closed_resolved"),
        # The case summaries (open cases by age, closed ones by resolution) read only these.
        Index("ix_flags_open_institution_id_detected_at", "institution_id", "detected_at",
              postgresql_where=text("status <> 'closed'")),
        Index("ix_flags_closed_institution_id_resolution", "institution_id", "resolution",
              postgresql_where=text("status = 'closed'")),
    )

    flag_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Insertion order and the writing transaction: the SSE stream reads in (tx, seq) order
    # below the oldest running transaction, so a flag committed late is never skipped.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    tx: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint")
    )
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(10))
    trace_code: Mapped[str | None] = mapped_column(String(64))
    institution_id: Mapped[str] = mapped_column(String(12))
    settlement_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    settled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    patient_ref: Mapped[str | None] = mapped_column(String(32))
    first_payment: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Outbox mark: set once the flags topic acknowledged it, so a batch redelivered after a
    # crash republishes exactly the flags that never reached the topic.
    published: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # Triage (CONTRACT §7). Defaults, so the consumers' insert of a detection stays as it is.
    status: Mapped[str] = mapped_column(String(16), server_default="new")
    resolution: Mapped[str | None] = mapped_column(String(20))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class FlagHistory(Base):
    """One triage step of a case: who (the key's id and role, never the key) did what, when."""

    __tablename__ = "flag_history"
    __table_args__ = (
        CheckConstraint(f"status IN {FLAG_STATUSES!r}", name="status"),
        CheckConstraint(f"resolution IN {RESOLUTIONS!r}", name="resolution"),
        Index("ix_flag_history_flag_id_id", "flag_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    flag_id: Mapped[str] = mapped_column(String(40), ForeignKey("flags.flag_id"))
    status: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(2000))
    actor_key_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("api_keys.id"))
    actor_role: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
