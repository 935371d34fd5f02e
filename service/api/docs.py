"""`/docs`: Swagger UI from the package's own copy of its assets (a closed network has no
CDN), over the app's `/openapi.json`."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = files("service.api") / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Call with an app made with `docs_url=None, redoc_url=None` (FastAPI's own pages load
    their scripts from a CDN)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            # No badge fetched from the online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )
