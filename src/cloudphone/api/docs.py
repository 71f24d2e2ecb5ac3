"""``/docs``: the Swagger UI, served with its assets from the package, so it works offline.

FastAPI's default page loads Swagger UI from a CDN (and its favicon from fastapi.tiangolo.com);
this one uses the copy vendored in ``static/swagger-ui`` (see its README for the version and
licence). ReDoc, which would need a CDN as well, is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI_VERSION = "5.35.0"
"""The vendored ``swagger-ui-dist`` release."""
ASSETS = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets under ``/docs/assets``.

    Create the app with ``docs_url=None`` so FastAPI's CDN page is not registered as well.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # The default validator badge asks validator.swagger.io about the document.
            swagger_ui_parameters={"validatorUrl": None},
        )
