"""The drug catalogue (CONTRACT §8): an entry per med_list_codg with its pack size."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.dependencies import CallerDep, ClientsDep, SessionDep
from service.api.responses import ERROR_RESPONSES
from service.auth import service as auth
from service.auth.schemas import Role
from service.drugs import service as drugs
from service.drugs.models import Drug
from service.drugs.schemas import DrugIn, DrugOut

router = APIRouter(prefix="/v1/drugs", tags=["drugs"], responses=ERROR_RESPONSES)


@router.put("/{med_list_codg}")
async def put_drug(
    med_list_codg: str, body: DrugIn, caller: CallerDep, clients: ClientsDep,
) -> DrugOut:
    """Its own unit of work, committed before the cache forgets the entry: forgotten first, a
    concurrent NHSA call could load the old pack size again and keep it for the cache's TTL."""
    auth.require_role(caller, Role.ADMIN)
    async with clients.sessionmaker() as session, session.begin():
        row = await drugs.put(session, med_list_codg, body)
    clients.drugs.forget(med_list_codg)  # this process at once, the others within the TTL
    return _out(row)


@router.get("/{med_list_codg}")
async def get_drug(med_list_codg: str, caller: CallerDep, session: SessionDep) -> DrugOut:
    auth.require_role(caller, Role.ADMIN, Role.REGULATOR)
    return _out(await drugs.get_existing(session, med_list_codg))


def _out(row: Drug) -> DrugOut:
    return DrugOut(med_list_codg=row.med_list_codg, name=row.name, pack_size=row.pack_size,
                   updated_at=row.updated_at)
