"""What every route takes from a request: the API's connections, the FHIR base URL, the caller acting on a job
(with the request's Trace, api/traces.py), the Idempotency-Key, and numeric query parameters. Routes import these
from here, never from one another."""

from __future__ import annotations

import json
from dataclasses import replace

from fastapi import Request

from api.dependencies import Connections
from api.tenancy import tenant_of
from api.traces import trace
from worker.errors import InvalidRequest, ResourceNotFound
from worker.model.access import Actor, Principal
from worker.model.jobs import JobRequest
from worker.patch.structure import is_resource_type


def connections(request: Request) -> Connections:
    """The connections of the community the request was routed to (api/tenancy.py)."""
    registries: dict[str, Connections] = request.app.state.registries
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        conn: Connections = request.app.state.connections
        return conn
    return registries[tenant]


def fhir_base(request: Request) -> str:
    configured = connections(request).settings.base_url
    return configured or f"{str(request.base_url).rstrip('/')}/fhir"


def acting(request: Request, caller: Principal, job: JobRequest) -> JobRequest:
    """The job with who asks for it: subject, client, the permissions granted on its type, the request's Trace."""
    actor = Actor(caller.subject, caller.client_id, caller.grants.on(job.resource_type), trace(request))
    return replace(job, actor=actor, tenant=tenant_of(request))


def idempotency_key(request: Request, caller: Principal) -> str | None:
    """The client's Idempotency-Key, scoped to its subject (another subject's key is another key)."""
    given = request.headers.get("idempotency-key")
    return json.dumps([caller.subject, given]) if given else None


def query_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter (ASCII digits only) within [low, high]; 400 naming it otherwise."""
    raw = request.query_params.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", name)
    return int(raw)


def resource_type_named(name: str) -> str:
    """A route's `{resource_type}`: a FHIR R4 resource type, else 404 (the URL names nothing served here)."""
    if not is_resource_type(name):
        raise ResourceNotFound(f"Unknown resource type {name!r}", "type")
    return name
