"""Which community's registry a /fhir request is for (FHIR_PATCH_TENANTS, FHIR_PATCH_TENANT_PARAMETER).

`CommunityRouting` is an ASGI middleware, so the routing is decided before anything else looks at the request:
- a /fhir request but metadata must name one community, once (`?homeCommunityId=...`; a bare OID and its
  `urn:oid:` form are the same one): missing, repeated or unknown is 400, naming the parameter;
- the parameter is taken out of the query string, so every route sees only its own parameters, and the tenant
  is put in the request's state (`tenant_of`): `api.deps.connections` then gives the routes that registry;
- the URLs the answer points to (`Location`, `Content-Location`: jobs, feeds, versions) get the parameter
  back, so following them stays in the community (polling a job from another community is 404).
Without FHIR_PATCH_TENANTS it is not installed, and every request is the `default` tenant's.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote_plus

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http import error_response
from worker.errors import InvalidRequest
from worker.model.tenants import DEFAULT_TENANT, TenantTarget, canonical_tenant

_UNROUTED = ("/fhir/metadata",)  # the CapabilityStatement asks nothing of its reader


def asks_of_its_reader(path: str) -> bool:
    """A path under /fhir but metadata: one that must name its community and carry the required headers."""
    return (path == "/fhir" or path.startswith("/fhir/")) and path not in _UNROUTED


_LINK_HEADERS = (b"location", b"content-location")


def tenant_of(request: Request) -> str:
    """The tenant the request was routed to (`default` without FHIR_PATCH_TENANTS, or outside /fhir)."""
    tenant: str = getattr(request.state, "tenant", DEFAULT_TENANT)
    return tenant


def in_community(request: Request, url: str) -> str:
    """One of our URLs with the request's community, so that following it stays there: the links of searchset
    and history Bundles (headers get it from the middleware)."""
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        return url
    parameter: str = request.app.state.connections.settings.tenant_parameter
    return f"{url}{'&' if '?' in url else '?'}{parameter}={quote(tenant, safe='.-_')}"


class CommunityRouting:
    def __init__(self, app: ASGIApp, parameter: str, tenants: Mapping[str, TenantTarget]) -> None:
        self._app = app
        self._parameter = parameter
        self._tenants = tenants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not asks_of_its_reader(path):
            await self._app(scope, receive, send)
            return
        try:
            given, rest = self._split(scope.get("query_string", b"").decode("latin-1"))
            tenant = self._tenant(given)
        except InvalidRequest as exc:
            await error_response(exc)(scope, receive, send)
            return
        routed = {
            **scope,
            "query_string": rest.encode("latin-1"),
            "state": {**scope.get("state", {}), "tenant": tenant},
        }
        suffix = f"{self._parameter}={quote(tenant, safe='.-_')}".encode("latin-1")

        async def linking(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [_linked(name, value, suffix) for name, value in message["headers"]]}
            await send(message)

        await self._app(routed, receive, linking)

    def _split(self, query: str) -> tuple[list[str], str]:
        """The values of the parameter, and the query string without it (the rest byte for byte)."""
        given, rest = [], []
        for item in query.split("&") if query else []:
            name, _, value = item.partition("=")
            if unquote_plus(name) == self._parameter:
                given.append(unquote_plus(value))
            else:
                rest.append(item)
        return given, "&".join(rest)

    def _tenant(self, given: list[str]) -> str:
        name = self._parameter
        if not given:
            raise InvalidRequest(
                f"This server holds the registries of several communities: name one with ?{name}=<its OID>", name
            )
        if len(given) > 1:
            raise InvalidRequest(f"Name one community: {name} is given {len(given)} times", name)
        tenant = canonical_tenant(given[0])
        if tenant not in self._tenants:
            raise InvalidRequest(f"{name} {given[0]!r} names no community this server holds a registry for", name)
        return tenant


def _linked(name: bytes, value: bytes, suffix: bytes) -> tuple[bytes, bytes]:
    if name.lower() not in _LINK_HEADERS or suffix.split(b"=")[0] + b"=" in value:
        return name, value
    return name, value + (b"&" if b"?" in value else b"?") + suffix
