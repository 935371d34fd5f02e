"""The drug catalogue's shapes (CONTRACT §8)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel, Field

PACK_SIZE_MAX = 1_000_000  # as the settlement's pack_size (CONTRACT §3)


class DrugIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    pack_size: int = Field(ge=1, le=PACK_SIZE_MAX)


class DrugOut(DrugIn):
    med_list_codg: str
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class CatalogueRow:
    """One row of a catalogue CSV, checked."""

    med_list_codg: str
    name: str
    pack_size: int
