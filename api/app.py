"""The FastAPI application: create_app(settings) wires routes and connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.dependencies import Connections
from api.routes import ops
from worker.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the API; connections open at startup and close at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.connections = Connections.open(settings)
        try:
            yield
        finally:
            app.state.connections.close()

    app = FastAPI(title="fhir-patch-worker", version="0.1.0", lifespan=lifespan)
    app.include_router(ops.router)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: `uvicorn --factory api.app:app_from_env`."""
    return create_app(Settings.from_env())
