from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, DateTime, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.database import Base


class Drug(Base):
    """One entry of the drug catalogue (医保药品目录), keyed by its med_list_codg: what a split
    (拆零) NHSA sale row needs, the units in one pack."""

    __tablename__ = "drugs"
    __table_args__ = (CheckConstraint("pack_size > 0", name="pack_size_positive"),)

    med_list_codg: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    pack_size: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
