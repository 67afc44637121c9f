"""The CapabilityStatement served at /fhir/metadata."""

from __future__ import annotations

import pkgutil
from functools import cache
from typing import Any

import fhir.resources.R4B as r4b_models
from fhir.resources.R4B import fhirtypes

from worker.patch import PATCH_MEDIA_TYPES
from worker.patch.structure import is_resource_type

_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type")
_SEARCH_PARAMS = [
    {
        "name": "identifier",
        "type": "token",
        "documentation": "system|value, |value (no system), value (any system) or system| (every value of a "
        "system, paged); also "
        "the conditional target of PATCH [base]/Type?identifier=...",
    },
    {"name": "_id", "type": "token", "documentation": "the logical id; also PATCH [base]/Type?_id=..."},
]


@cache
def resource_types() -> tuple[str, ...]:
    """Every FHIR R4 resource type the structure tables know (computed once: it imports each model)."""
    modules = {m.name for m in pkgutil.iter_modules(r4b_models.__path__)}
    candidates = sorted(name[:-4] for name in dir(fhirtypes) if name.endswith("Type") and name[:-4].lower() in modules)
    return tuple(name for name in candidates if is_resource_type(name))


_SMART = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]
}


def security(auth_disabled: bool) -> dict[str, Any]:
    """How clients authenticate (or, loudly, that they do not)."""
    if auth_disabled:
        return {
            "cors": False,
            "description": "AUTHENTICATION IS DISABLED (FHIR_PATCH_AUTH_DISABLED=true): every request is "
            "accepted without a token. For development only.",
        }
    return {
        "cors": False,
        "service": [_SMART],
        "description": "OAuth 2.0 bearer tokens (JWT, RS256 or ES256) with SMART on FHIR "
        "scopes, v1 (system/Type.read|write) or v2 (system/Type.cruds): read, vread and history need r, create c, "
        "update "
        "and patch u (a PUT that creates c), delete d. Jobs are visible to the subject that submitted them only.",
    }


def _resource(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": name,
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "searchParam": _SEARCH_PARAMS,
    }
    if name == "Provenance":  # Provenance is searched by what it is about
        entry["searchParam"] = [
            {
                "name": "target",
                "type": "reference",
                "documentation": "Type/id/_history/n (one version) or Type/id (every version, newest first)",
            }
        ]
    return entry


def capability_statement(base: str, auth_disabled: bool = False) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-21",
        "kind": "instance",
        "software": {"name": "fhir-patch-worker", "version": "0.1.0"},
        "implementation": {"description": "Asynchronous FHIR patch service", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "patchFormat": list(PATCH_MEDIA_TYPES),
        "rest": [
            {
                "mode": "server",
                "security": security(auth_disabled),
                "resource": [_resource(name) for name in resource_types()],
            }
        ],
    }
