"""Listings for operators (not in the contract, which reads institutions one at a time and
only mints keys): every institution, every API key, with cursor pagination as the flag list
has. `tracegate institutions list` and `tracegate keys list` are their clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.dependencies import CallerDep, SessionDep, SettingsDep
from service.api.responses import ERROR_RESPONSES
from service.auth import service as auth
from service.auth.schemas import ApiKeyPage, Role
from service.institutions import service as institutions
from service.institutions.schemas import InstitutionPage
from service.kit.errors import Unprocessable
from service.policy.schemas import PolicyConfig

router = APIRouter(prefix="/v1", tags=["admin"], responses=ERROR_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page (at most 1000)")]
_CURSOR = "next_cursor of the page before"


@router.get("/institutions")
async def list_institutions(
    caller: CallerDep, session: SessionDep, settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=12, description=_CURSOR)] = None,
    limit: Limit = 100,
) -> InstitutionPage:
    """Every registered institution in id order, with its effective go-live."""
    auth.require_role(caller, Role.ADMIN, Role.REGULATOR)
    return await institutions.list_institutions(session, cursor, limit,
                                                PolicyConfig.from_settings(settings))


@router.get("/api-keys")
async def list_api_keys(
    caller: CallerDep, session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=20, description=_CURSOR)] = None,
    limit: Limit = 100,
    include_revoked: bool = False,
) -> ApiKeyPage:
    """Every API key by id: role, institution, when made and revoked; never the key."""
    auth.require_role(caller, Role.ADMIN)
    return await auth.list_keys(session, _key_cursor(cursor), limit, include_revoked)


def _key_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise Unprocessable("cursor is not one this API returned")
    return int(cursor)
