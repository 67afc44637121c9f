"""The CapabilityStatement served at /fhir/metadata."""

from __future__ import annotations

import pkgutil
from functools import cache
from typing import Any

import fhir.resources.R4B as r4b_models
from fhir.resources.R4B import fhirtypes

from worker.patch import PATCH_MEDIA_TYPES
from worker.patch.structure import is_resource_type

_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "create")


@cache
def resource_types() -> tuple[str, ...]:
    """Every FHIR R4 resource type the structure tables know (computed once: it imports each model)."""
    modules = {m.name for m in pkgutil.iter_modules(r4b_models.__path__)}
    candidates = sorted(name[:-4] for name in dir(fhirtypes) if name.endswith("Type") and name[:-4].lower() in modules)
    return tuple(name for name in candidates if is_resource_type(name))


def capability_statement(base: str) -> dict[str, Any]:
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
        "rest": [{
            "mode": "server",
            "resource": [{"type": name, "versioning": "versioned", "readHistory": True, "updateCreate": True,
                          "interaction": [{"code": code} for code in _INTERACTIONS]} for name in resource_types()],
        }],
    }
