from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field


class Role(StrEnum):
    ADMIN = "admin"
    POS = "pos"  # bound to one institution
    REGULATOR = "regulator"  # reads everything
    OPS = "ops"  # watches flags


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the role of their key and, for pos keys, the one institution."""

    key_id: int
    role: Role
    institution_id: str | None


class ApiKeyCreate(BaseModel):
    role: Role
    institution_id: str | None = Field(default=None, min_length=12, max_length=12)


class ApiKeyCreated(BaseModel):
    key: str
    key_id: int
    role: Role
    institution_id: str | None


class ApiKeyRevoked(BaseModel):
    key_id: int
    revoked_at: dt.datetime


class ApiKeyListed(BaseModel):
    """A key as listings show it: never the key, nor its digest."""

    key_id: int
    role: Role
    institution_id: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyPage(BaseModel):
    items: list[ApiKeyListed]
    next_cursor: str | None
