from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel, Field

from service.settings import InstitutionKind


class InstitutionIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: InstitutionKind
    region: str | None = Field(default=None, max_length=100)
    go_live_override: dt.date | None = None


class InstitutionCounts(BaseModel):
    payments: int
    flags: dict[str, int]


class InstitutionOut(InstitutionIn):
    institution_id: str
    effective_go_live: dt.datetime
    counts: InstitutionCounts


@dataclass(frozen=True, slots=True)
class InstitutionRef:
    """What deciding a settlement needs of its institution: an immutable snapshot, safe to
    keep across sessions (an ORM row is expired by a rollback)."""

    institution_id: str
    number: int
    kind: InstitutionKind
    go_live_override: dt.date | None


class InstitutionListed(InstitutionIn):
    """One institution of a listing: its registration and effective go-live (counts are in
    the single GET, which costs a count query per institution)."""

    institution_id: str
    effective_go_live: dt.datetime


class InstitutionPage(BaseModel):
    items: list[InstitutionListed]
    next_cursor: str | None
