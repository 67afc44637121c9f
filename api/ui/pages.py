"""`/ui/`: the page for the people who run feeds. It holds no data: its script calls the API with the user's token.

Every path of the page (`/ui/`, `/ui/feeds/{id}`, `/ui/resources/{type}/{id}`) answers the same HTML, and the
script shows what the path names. The files are read once, at import, from a fixed list (no path from the
request reaches the file system). Every answer carries a strict Content-Security-Policy: scripts, styles and
calls from this origin only, no inline script, no frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response

from worker.errors import ResourceNotFound
from worker.settings import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
_STATIC = Path(__file__).parent / "static"
_FILES = {p.name: (p.read_bytes(), _TYPES[p.suffix]) for p in sorted(_STATIC.iterdir()) if p.suffix in _TYPES}


def router(settings: Settings) -> APIRouter:
    """The page's routes, for these settings (whether a token is asked for, the community parameter)."""
    pages = APIRouter(prefix="/ui", include_in_schema=False)
    config = _config(settings)

    @pages.get("")
    async def to_page() -> Response:
        return RedirectResponse("/ui/", 308, headers=_HEADERS)

    @pages.get("/")
    @pages.get("/feeds/{group_id}")
    @pages.get("/resources/{resource_type}/{resource_id}")
    async def page() -> Response:
        return _file("index.html")

    @pages.get("/static/{name}")
    async def static(name: str) -> Response:
        return _file(name)

    @pages.get("/config.json")
    async def page_config() -> Response:
        return JSONResponse(config, headers=_HEADERS)

    return pages


def _file(name: str) -> Response:
    if name not in _FILES:
        raise ResourceNotFound(f"The page has no file {name!r}", "name")
    body, media_type = _FILES[name]
    return Response(body, 200, _HEADERS, media_type=media_type)


def _config(settings: Settings) -> dict[str, Any]:
    """What the script needs to know of the deployment: no data, only how to call the API."""
    return {
        "authDisabled": settings.auth_disabled,
        "communityParameter": settings.tenant_parameter if settings.tenants else None,
        "communities": sorted(settings.tenants),
        "requiredHeaders": list(settings.required_headers),
    }
