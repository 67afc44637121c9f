"""The FastAPI application: create_app(settings) wires routes, error handlers and connections."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from api import docs_pages
from api.dependencies import Connections
from api.http import check_retry_on_conflict, host_check, install_error_handlers
from api.openapi import describe
from api.routes import bundles, diff, feeds, fhir, jobs, ops, provenance
from api.tenancy import CommunityRouting
from api.traces import EchoCorrelation, fhir_checks
from api.ui import pages
from worker.logs import configure_logging
from worker.settings import Settings

# The routers that take writes check the write headers every route shares, before any route runs.
_WRITES = [Depends(check_retry_on_conflict)]

log = logging.getLogger("fhir_patch.api")
_DESCRIPTION = (
    "FHIR R4 `patch` (JSON Patch, XML Patch, FHIRPath Patch), create, update, delete, read, history and search, "
    "applied in order per resource; `Prefer: respond-async` answers 202 with a job to poll. Feeds are NDJSON "
    "(`$bulk-submit`). Authorize with a bearer token; a DPoP-bound token needs a proof per request, which this "
    "page cannot make (`fhir-patch dpop-proof`). The operator page is at [/ui/](/ui/)."
)


def create_app(settings: Settings) -> FastAPI:
    """Build the API; connections open at startup and close at shutdown."""

    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (FHIR_PATCH_AUTH_DISABLED=true): every request is accepted without a token"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registries = Connections.open(settings)
        connections = next(iter(registries.values()))  # what is shared, and the registry outside /fhir
        await anyio.to_thread.run_sync(connections.backends.ensure_indexes)
        await connections.start()
        app.state.connections, app.state.registries = connections, registries
        try:
            yield
        finally:
            await connections.close()

    checks = [Depends(host_check(settings)), Depends(fhir_checks(settings))]
    # Swagger UI's and ReDoc's assets served from the fastapi-offline package (the pages: api/docs_pages.py), so
    # the docs work with no internet access.
    app = FastAPIOffline(
        docs_url=None,
        redoc_url=None,
        title="fhir-patch-worker",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        dependencies=checks,
        static_url=docs_pages.STATIC,
    )
    describe(app, settings.tenant_parameter if settings.tenants else None)
    _install(app, settings)
    return app


def _install(app: FastAPI, settings: Settings) -> None:
    """Middlewares, error handlers and routers, in the order they must match."""
    if settings.correlation_header:
        app.add_middleware(EchoCorrelation, header=settings.correlation_header)
    if settings.tenants:  # outermost: a request is routed to its community's registry before anything else
        app.add_middleware(CommunityRouting, parameter=settings.tenant_parameter, tenants=settings.tenants)
    install_error_handlers(app)
    app.include_router(ops.router)
    # before fhir: /fhir/$bulk-submit and /fhir/_async/... are not /fhir/{type}/...
    app.include_router(feeds.router, dependencies=_WRITES)
    app.include_router(jobs.router)
    app.include_router(bundles.router, dependencies=_WRITES)
    app.include_router(provenance.router)  # before fhir: GET /fhir/Provenance is a search, not a read
    app.include_router(diff.router)  # before fhir: GET /fhir/$diff is no search, POST /fhir/$diff no create
    app.include_router(fhir.router, dependencies=_WRITES)
    # Last: the pages share no path with /fhir, and a FHIR request need not be matched against them first.
    app.include_router(docs_pages.router(app))
    app.include_router(pages.router(settings))


def app_from_env() -> FastAPI:
    """uvicorn factory: `uvicorn --factory api.app:app_from_env`."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
