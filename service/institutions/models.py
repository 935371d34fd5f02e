from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Identity, String, func
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.database import Base

KINDS = ("retail_pharmacy", "primary", "secondary", "tertiary")


class Institution(Base):
    """A designated institution (定点医药机构), keyed by its 12-character fixmedins_code."""

    __tablename__ = "institutions"
    __table_args__ = (
        CheckConstraint(f"kind IN {KINDS!r}", name="kind"),
        CheckConstraint("char_length(institution_id) = 12", name="institution_id_length"),
    )

    institution_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    # A small integer alias: the first-seen store keeps 4 bytes per code, not 12.
    number: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(100))
    go_live_override: Mapped[dt.date | None] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
