"""The patch engine: a pure library (no Celery, pymongo or FastAPI).

JSON Patch (RFC 6902), XML Patch (RFC 5261) and FHIRPath Patch on FHIR R4
resources, with precise OperationOutcomes and a diff generator.
"""

from worker.patch.diff import diff_resources
from worker.patch.errors import (
    ElementExists,
    ForbiddenChange,
    InvalidResource,
    Issue,
    MalformedPatch,
    MultipleMatches,
    NotApplicable,
    PatchError,
    TargetNotFound,
    TestFailed,
    UnsupportedPatchFormat,
    WrongStructure,
)
from worker.patch.fhirpath_patch import apply_fhirpath_patch
from worker.patch.interaction import PATCH_MEDIA_TYPES, ParsedPatch, PatchOutcome, apply_patch, media_type, parse_patch
from worker.patch.json_patch import apply_json_patch
from worker.patch.xml_patch import apply_xml_patch

__all__ = [
    "PATCH_MEDIA_TYPES",
    "ElementExists",
    "ForbiddenChange",
    "InvalidResource",
    "Issue",
    "MalformedPatch",
    "MultipleMatches",
    "NotApplicable",
    "ParsedPatch",
    "PatchError",
    "PatchOutcome",
    "TargetNotFound",
    "TestFailed",
    "UnsupportedPatchFormat",
    "WrongStructure",
    "apply_fhirpath_patch",
    "apply_json_patch",
    "apply_patch",
    "apply_xml_patch",
    "diff_resources",
    "media_type",
    "parse_patch",
]
