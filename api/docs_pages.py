"""/docs (Swagger UI) and /redoc (ReDoc), with every asset served from the fastapi-offline package.

fastapi-offline mounts the assets at STATIC; the two pages are built here so that each answer also carries a
Content-Security-Policy that lets nothing load from another origin: ReDoc's sidebar otherwise fetches its logo
from cdn.redoc.ly (seen in the browser test), and a page for hospital networks must not depend on, or leak
to, the internet. Both libraries put inline styles and one inline start-up script in their pages, which the
policy allows; the operator page (api/ui/) allows neither.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

STATIC = "/docs/static"
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)


def router(app: FastAPI) -> APIRouter:
    """The two documentation pages of `app`."""
    pages = APIRouter(include_in_schema=False)
    title, favicon = app.title, f"{STATIC}/favicon.png"

    @pages.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": True},
        )
        return _with_policy(page)

    @pages.get("/redoc")
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
        return _with_policy(page)

    return pages


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page
