"""FHIRPath Patch documents for tests and benchmarks."""

from __future__ import annotations

from typing import Any


def fhirpath_replace(path: str, value: dict[str, Any]) -> dict[str, Any]:
    """A Parameters resource with one replace operation: `path` gets `value` (e.g. {"valueCode": "female"})."""
    parts = [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": path},
        {"name": "value", **value},
    ]
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
