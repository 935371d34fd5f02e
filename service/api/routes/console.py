"""The operations console: its page and assets (all in the package: it works on a closed
network), the charts' series, and who a key is (the console's sign-in)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.api.dependencies import CallerDep
from service.api.responses import ERROR_RESPONSES, JSONResponse
from service.auth import service as auth
from service.auth.schemas import Role
from service.console.sampler import Sampler
from service.console.schemas import Me, Series

router = APIRouter(tags=["console"], responses=ERROR_RESPONSES)

STATIC = files("service.console") / "static"
# Only this origin's own files: the page can reach no CDN, and nothing can frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/assets", StaticFiles(directory=str(STATIC)), name="console-assets")


@cache
def _page() -> str:
    return (STATIC / "index.html").read_text()


@router.get("/console", include_in_schema=False)
async def console_page() -> HTMLResponse:
    return HTMLResponse(_page(), headers=SECURITY_HEADERS)


@router.get("/v1/ops/series", responses={200: {"model": Series}}, response_model=None)
async def series(caller: CallerDep, request: Request) -> JSONResponse:
    auth.require_role(caller, Role.OPS, Role.REGULATOR, Role.ADMIN)
    sampler: Sampler = request.app.state.sampler
    return JSONResponse(sampler.columns())


@router.get("/v1/me")
async def me(caller: CallerDep) -> Me:
    return Me(key_id=caller.key_id, role=caller.role.value, institution_id=caller.institution_id)
