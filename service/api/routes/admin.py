"""Institutions and API keys (CONTRACT §4)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.dependencies import CallerDep, ClientsDep, SessionDep, SettingsDep
from service.api.responses import ERROR_RESPONSES
from service.api.schemas import InstitutionView
from service.auth import service as auth
from service.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRevoked, Role
from service.flags import repository as flags_repository
from service.flags import triage
from service.institutions import changes
from service.institutions import service as institutions
from service.institutions.models import Institution
from service.institutions.schemas import InstitutionCounts, InstitutionIn
from service.policy.schemas import PolicyConfig
from service.policy.service import go_live_instant
from service.records import repository as records_repository
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["admin"], responses=ERROR_RESPONSES)


@router.put("/institutions/{institution_id}")
async def put_institution(
    institution_id: str, body: InstitutionIn, caller: CallerDep, settings: SettingsDep,
    clients: ClientsDep,
) -> InstitutionView:
    """Its own unit of work: committed before the gates hear of the change, or they would
    load the old row again (and keep it for minutes)."""
    auth.require_role(caller, Role.ADMIN)
    async with clients.sessionmaker() as session:
        async with session.begin():
            row = await institutions.put(session, institution_id, body)
        await changes.changed(clients.redis)
        return await _institution_out(session, row, settings)


@router.get("/institutions/{institution_id}")
async def get_institution(
    institution_id: str, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> InstitutionView:
    auth.require_role(caller, Role.ADMIN, Role.REGULATOR)
    row = await institutions.get_existing(session, institution_id)
    return await _institution_out(session, row, settings)


async def _institution_out(
    session: AsyncSession, row: Institution, settings: Settings
) -> InstitutionView:
    policy = institutions.to_policy(row)
    counts = InstitutionCounts(
        payments=await records_repository.payment_count(session, row.institution_id),
        flags=await flags_repository.count_by_kind(session, row.institution_id),
    )
    return InstitutionView(
        institution_id=row.institution_id, name=row.name, kind=policy.kind, region=row.region,
        go_live_override=row.go_live_override,
        effective_go_live=go_live_instant(policy, PolicyConfig.from_settings(settings)),
        counts=counts, cases=await triage.summary(session, row.institution_id),
    )


@router.post("/api-keys", status_code=201)
async def create_api_key(
    body: ApiKeyCreate, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> ApiKeyCreated:
    auth.require_role(caller, Role.ADMIN)
    if body.institution_id is not None:
        await institutions.get_for_settlement(session, body.institution_id)
    return await auth.create_key(session, settings.api_key_pepper.get_secret_value(), body)


@router.delete("/api-keys/{key_id}")
async def revoke_api_key(
    key_id: int, caller: CallerDep, session: SessionDep, clients: ClientsDep
) -> ApiKeyRevoked:
    """Not in CONTRACT §4 (which only mints keys): a leaked or retired key must be revocable
    without SQL. Idempotent; the answer keeps the first revocation time."""
    auth.require_role(caller, Role.ADMIN)
    return await auth.revoke_key(session, caller, key_id, clients.callers)
