"""Institutions (定点医药机构): registration and the view of them the rules need."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from service.institutions import repository
from service.institutions.models import Institution
from service.institutions.schemas import (
    InstitutionIn,
    InstitutionListed,
    InstitutionPage,
    InstitutionRef,
)
from service.kit.errors import NotFound, Unprocessable
from service.policy.schemas import InstitutionPolicy, PolicyConfig
from service.policy.service import go_live_instant
from service.settings import InstitutionKind

_FIXMEDINS_CODE = re.compile(r"^[0-9A-Z]{12}$")


class UnknownInstitution(Unprocessable):
    code = "UNKNOWN_INSTITUTION"


class InstitutionNotFound(NotFound):
    code = "INSTITUTION_NOT_FOUND"


class InvalidInstitutionId(Unprocessable):
    code = "INVALID_INSTITUTION_ID"


def check_institution_id(institution_id: str) -> None:
    if not _FIXMEDINS_CODE.match(institution_id):
        raise InvalidInstitutionId(
            f"institution_id {institution_id!r} must be a 12-character fixmedins_code [0-9A-Z]"
        )


def to_policy(row: Institution | InstitutionRef) -> InstitutionPolicy:
    return InstitutionPolicy(row.institution_id, InstitutionKind(row.kind), row.go_live_override)


def to_ref(row: Institution) -> InstitutionRef:
    return InstitutionRef(
        row.institution_id, row.number, InstitutionKind(row.kind), row.go_live_override
    )


async def put(session: AsyncSession, institution_id: str, data: InstitutionIn) -> Institution:
    check_institution_id(institution_id)
    await repository.upsert(session, institution_id, data)
    return await get_existing(session, institution_id)


async def get_existing(session: AsyncSession, institution_id: str) -> Institution:
    row = await repository.get(session, institution_id)
    if row is None:
        raise InstitutionNotFound(f"institution {institution_id} is not registered")
    return row


async def get_for_settlement(session: AsyncSession, institution_id: str) -> InstitutionRef:
    """A settlement naming an unregistered institution is a 422, not a 404."""
    row = await repository.get(session, institution_id)
    if row is None:
        raise UnknownInstitution(f"institution {institution_id} is not registered")
    return to_ref(row)


async def put_many(session: AsyncSession, rows: Sequence[tuple[str, InstitutionIn]]) -> None:
    """Register or update many institutions at once (`tracegate institutions import`); the
    caller has checked every id and row, so a bad one fails the import before any write."""
    for institution_id, _ in rows:
        check_institution_id(institution_id)
    await repository.upsert_many(session, rows)


async def list_institutions(
    session: AsyncSession, after: str | None, limit: int, config: PolicyConfig
) -> InstitutionPage:
    rows = await repository.page(session, after, limit + 1)
    items = [_listed(row, config) for row in rows[:limit]]
    more = len(rows) > limit
    return InstitutionPage(items=items, next_cursor=items[-1].institution_id if more else None)


def _listed(row: Institution, config: PolicyConfig) -> InstitutionListed:
    policy = to_policy(row)
    return InstitutionListed(
        institution_id=row.institution_id, name=row.name, kind=policy.kind, region=row.region,
        go_live_override=row.go_live_override,
        effective_go_live=go_live_instant(policy, config),
    )
