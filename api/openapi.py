"""The OpenAPI document behind /docs and /redoc: FHIR media types, and the bearer and DPoP security schemes.

The routes read their bodies themselves (a patch comes in four formats, a feed as a stream), so FastAPI sees
no request body and no token dependency it could describe. `describe` adds them to the generated document once,
from the tables below, so Swagger UI's "Authorize" sends the token and "Try it out" offers the right body types.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.tenancy import asks_of_its_reader

FHIR_JSON = "application/fhir+json"
_ANY_RESOURCE: dict[str, Any] = {"type": "object", "description": "A FHIR R4 resource"}
_PATCH_BODIES = {
    "application/json-patch+json": {
        "schema": {"type": "array", "items": {"type": "object"}, "description": "JSON Patch (RFC 6902)"}
    },
    "application/xml-patch+xml": {"schema": {"type": "string", "description": "XML Patch (RFC 5261)"}},
    FHIR_JSON: {"schema": {**_ANY_RESOURCE, "description": "FHIRPath Patch: a Parameters resource"}},
    "application/fhir+xml": {"schema": {"type": "string", "description": "FHIRPath Patch as FHIR XML"}},
}
_RESOURCE_BODY = {FHIR_JSON: {"schema": _ANY_RESOURCE}, "application/fhir+xml": {"schema": {"type": "string"}}}
_NDJSON_BODY = {"application/fhir+ndjson": {"schema": {"type": "string", "description": "One entry per line"}}}

# (method, path) -> the request body it takes.
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("patch", "/fhir/{resource_type}/{resource_id}"): _PATCH_BODIES,
    ("patch", "/fhir/{resource_type}"): _PATCH_BODIES,
    ("put", "/fhir/{resource_type}/{resource_id}"): _RESOURCE_BODY,
    ("post", "/fhir/{resource_type}"): _RESOURCE_BODY,
    ("post", "/fhir"): {FHIR_JSON: {"schema": {**_ANY_RESOURCE, "description": "A batch or transaction Bundle"}}},
    ("post", "/fhir/$bulk-submit"): _NDJSON_BODY,
    ("post", "/fhir/$diff"): {FHIR_JSON: {"schema": {**_ANY_RESOURCE, "description": "Parameters: two resources"}}},
}
_HEADERS = [
    ("Prefer", "respond-async for 202 and a job to poll; return=representation|minimal|OperationOutcome"),
    ("If-Match", 'W/"<version>": apply only to that version'),
    ("Idempotency-Key", "the same key again answers the first request's job instead of making another"),
]
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A SMART on FHIR access token (RS256 or ES256), as `Authorization: Bearer <JWT>`.",
    },
    # Swagger UI sends only bearer and basic http schemes, so a DPoP-bound token and its proof are two header
    # keys: `Authorization: DPoP <JWT>` and the `DPoP` proof made for that one request (`fhir-patch dpop-proof`).
    "dpopToken": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A DPoP-bound token (RFC 9449), as `DPoP <JWT>`, sent with a proof (dpopProof).",
    },
    "dpopProof": {
        "type": "apiKey",
        "in": "header",
        "name": "DPoP",
        "description": "The DPoP proof JWT for one request (its method and URL), e.g. from `fhir-patch dpop-proof`.",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"dpopToken": [], "dpopProof": []}]
_OPEN = {"/fhir/metadata", "/healthz", "/readyz"}  # answered without a token


def describe(app: FastAPI, community_parameter: str | None = None) -> None:
    """Make `app.openapi()` return the described document (built once, on first use); with communities, every
    /fhir operation but metadata takes the `community_parameter` query parameter."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
            app.openapi_schema = _described(schema, community_parameter)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


def _described(schema: dict[str, Any], community_parameter: str | None) -> dict[str, Any]:
    components = {**schema.get("components", {}), "securitySchemes": SECURITY_SCHEMES}
    paths = {path: {m: _operation(m, path, op) for m, op in ops.items()} for path, ops in schema["paths"].items()}
    if community_parameter:
        community = {"name": community_parameter, "in": "query", "required": True, "schema": {"type": "string"}}
        paths = {
            path: {m: {**op, "parameters": [*op.get("parameters", []), community]} for m, op in ops.items()}
            if asks_of_its_reader(path)
            else ops
            for path, ops in paths.items()
        }
    return {**schema, "components": components, "paths": paths}


def _operation(method: str, path: str, operation: dict[str, Any]) -> dict[str, Any]:
    if not path.startswith("/fhir"):
        return operation if path in _OPEN else {**operation, "security": SECURITY}
    described = {**operation, "responses": _fhir_responses(operation.get("responses", {}))}
    if path not in _OPEN:
        described["security"] = SECURITY
    body = _BODIES.get((method, path))
    if body is not None:
        described["requestBody"] = {"required": True, "content": body}
    if method in ("patch", "put", "post"):
        headers = [
            {"name": n, "in": "header", "required": False, "schema": {"type": "string"}, "description": d}
            for n, d in _HEADERS
        ]
        described["parameters"] = [*operation.get("parameters", []), *headers]
    return described


def _fhir_responses(responses: dict[str, Any]) -> dict[str, Any]:
    """Every answer is FHIR JSON: a resource, a Bundle or an OperationOutcome (4xx and 5xx)."""
    fhir = {"content": {FHIR_JSON: {"schema": _ANY_RESOURCE}}}
    described = {code: {**answer, **fhir} for code, answer in responses.items() if code != "422"}
    described.setdefault("4XX", {"description": "An OperationOutcome saying what was wrong and where", **fhir})
    return described
