"""The record (PostgreSQL): settlements with their decided lines, every code event, the
first-payment claims that arbitrate "first", and reversals.

Scale notes (1,000亿+ code events): `code_events` is range-partitioned by month on `event_at`,
so old months detach and archive whole and each partition's index stays small; its primary key
starts with the canonical code, so one code's history is an index probe per partition, bounded
below by `code_claims.first_seen_at`. `code_claims` is hash-partitioned on the code: it is
the unique constraint that guarantees one first payment per code, whatever Redis says.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.database import Base


class Settlement(Base):
    """One settlement as recorded, with every line and its decision (`lines`, JSON: a line
    is only ever read with its settlement, so a row per line would double the write load)."""

    __tablename__ = "settlements"
    __table_args__ = (
        CheckConstraint("source IN ('gate', 'stream')", name="source"),
        CheckConstraint("decision IN ('pay', 'partial', 'reject')", name="decision"),
        # An institution's sales over a time range (NHSA 3513): one index range scan.
        Index(None, "institution_id", "settled_at"),
    )

    settlement_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(12))
    settled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    patient_ref: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(10))
    # SHA-256 of the canonical request body: the same id with another body is a conflict.
    body_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    decision: Mapped[str] = mapped_column(String(10))
    enforced: Mapped[bool] = mapped_column(Boolean)
    # json, not jsonb: stored as encoded and handed back as it came (migration 0020).
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    recorded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class CodeEvent(Base):
    """A payment or reversal of one canonical code (the history regulators read)."""

    __tablename__ = "code_events"
    __table_args__ = (
        # No primary key in the database (migration 0015): each row is written once, with the
        # settlement or reversal it belongs to. The ORM needs one to map rows; this is it.
        # A hash index: every read is an equality on the code (migration 0021).
        Index("ix_code_events_code", "code", postgresql_using="hash"),
        CheckConstraint("type IN ('payment', 'reversal')", name="type"),
        {"postgresql_partition_by": "RANGE (event_at)"},
    )
    __mapper_args__ = {"primary_key": ["code", "event_at", "type", "settlement_id", "line_no"]}

    code: Mapped[str] = mapped_column(String(64))
    # settled_at for a payment, the reversal's own time for a reversal.
    event_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    type: Mapped[str] = mapped_column(String(10))
    settlement_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    institution_id: Mapped[str] = mapped_column(String(12))
    patient_ref: Mapped[str | None] = mapped_column(String(32))
    units: Mapped[int | None] = mapped_column(Integer)
    # A payment made under duplicate_policy=flag that never took over the claim.
    duplicate: Mapped[bool] = mapped_column(Boolean, server_default="false")
    reversal_id: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class CodeClaim(Base):
    """The current first payment of a code (or an opened split pack): at most one per code."""

    __tablename__ = "code_claims"
    __table_args__ = ({"postgresql_partition_by": "HASH (code)"},)

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    institution_id: Mapped[str] = mapped_column(String(12))
    paid_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # Split packs (拆零): units sold so far out of pack_size; null for a whole pack.
    units_used: Mapped[int | None] = mapped_column(Integer)
    pack_size: Mapped[int | None] = mapped_column(Integer)
    # Lower bound for history lookups: no event of this code is older than its first sight.
    first_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Reversal(Base):
    __tablename__ = "reversals"

    reversal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(String(64), index=True)
    # null = every line of the settlement
    line_nos: Mapped[list[int] | None] = mapped_column(JSONB)
    reversed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    answer: Mapped[dict[str, Any]] = mapped_column(JSONB)
    recorded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class InstitutionStats(Base):
    """Running counts per institution, kept in the same transaction as the events they count,
    so the institution page never counts billions of rows."""

    __tablename__ = "institution_stats"

    institution_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    payments: Mapped[int] = mapped_column(BigInteger, server_default="0")
