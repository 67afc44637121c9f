"""JSON Patch (RFC 6902) on any JSON value, on top of jsonpatch.

The document is fully parsed and checked (`parse_json_patch`) before any
target is read; errors name the operation as a JSON Pointer into the patch
document (`/2`, `/2/path`) and, for FHIR resources, the element's FHIRPath.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
from jsonpointer import EndOfList, JsonPointerException, resolve_pointer

from worker.patch.errors import MalformedPatch, NotApplicable, PatchError, TargetNotFound, TestFailed
from worker.patch.fhir_json import copy_json, dumps

# Members each operation needs, beyond "op" (RFC 6902 section 4). Others are ignored, as the RFC says.
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "add": ("path", "value"),
    "remove": ("path",),
    "replace": ("path", "value"),
    "move": ("from", "path"),
    "copy": ("from", "path"),
    "test": ("path", "value"),
}
_ABSENT = object()
_POINTER = re.compile(r"(/([^~/]|~[01])*)*")


@dataclass(frozen=True)
class JsonPatchOperation:
    index: int
    op: str
    document: Mapping[str, Any]

    @property
    def path(self) -> str:
        return str(self.document["path"])


def _check_pointer(value: Any, where: str, member: str) -> None:
    if not isinstance(value, str):
        raise MalformedPatch(f"'{member}' must be a JSON Pointer string, not {value!r}", where, code="value")
    if not _POINTER.fullmatch(value):
        raise MalformedPatch(
            f"'{member}' is not a valid JSON Pointer: {value!r} (it must be empty or start with '/', "
            "and '~' must be followed by 0 or 1)",
            where,
            code="value",
        )


def parse_json_patch(operations: Any) -> tuple[JsonPatchOperation, ...]:
    """Check a parsed JSON Patch document; MalformedPatch (400) names the bad operation."""
    if not isinstance(operations, list):
        raise MalformedPatch("A JSON Patch document must be a JSON array of operations", "/", code="structure")
    parsed = []
    for index, operation in enumerate(operations):
        where = f"/{index}"
        if not isinstance(operation, dict):
            raise MalformedPatch(f"Operation {index} must be a JSON object, not {operation!r}", where, code="structure")
        op = operation.get("op")
        if not isinstance(op, str) or op not in _REQUIRED:
            raise MalformedPatch(
                f"Operation {index} has unknown op {op!r}; use one of {', '.join(_REQUIRED)}", f"{where}/op"
            )
        for member in _REQUIRED[op]:
            if member not in operation:
                raise MalformedPatch(
                    f"Operation {index} ({op}) is missing its '{member}' member", f"{where}/{member}", code="required"
                )
        _check_pointer(operation["path"], f"{where}/path", "path")
        if "from" in _REQUIRED[op]:
            _check_pointer(operation["from"], f"{where}/from", "from")
        parsed.append(JsonPatchOperation(index, op, operation))
    return tuple(parsed)


def pointer_to_fhirpath(pointer: str, root: str) -> str:
    """/address/0/postalCode -> Patient.address[0].postalCode (for messages)."""
    path = root
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        path += f"[{token}]" if token.isdigit() or token == "-" else f".{token}"
    return path


def _applied(document: Any, operation: JsonPatchOperation) -> Any:
    try:
        return jsonpatch.JsonPatch([dict(operation.document)]).apply(document, in_place=True)
    except jsonpatch.JsonPatchTestFailed as exc:
        actual = resolve_pointer(document, operation.path, _ABSENT)
        found = "nothing" if actual is _ABSENT or isinstance(actual, EndOfList) else dumps(actual)
        raise TestFailed(
            f"Operation {operation.index} (test) failed: {operation.path} holds {found}, "
            f"not {dumps(operation.document['value'])}",
            *_where(document, operation),
        ) from exc
    except jsonpatch.JsonPatchConflict as exc:
        kind = TargetNotFound if "non-existent" in str(exc) else NotApplicable
        raise kind(
            f"Operation {operation.index} ({operation.op}) cannot be applied: {exc}", *_where(document, operation)
        ) from exc
    except (JsonPointerException, jsonpatch.InvalidJsonPatch, KeyError, IndexError, TypeError) as exc:
        raise TargetNotFound(
            f"Operation {operation.index} ({operation.op}) cannot be applied: {exc}", *_where(document, operation)
        ) from exc


def _where(document: Any, operation: JsonPatchOperation) -> tuple[str, ...]:
    root = document.get("resourceType") if isinstance(document, dict) else None
    if isinstance(root, str):
        return f"/{operation.index}", pointer_to_fhirpath(operation.path, root)
    return f"/{operation.index}", operation.path


def apply_parsed_json_patch(document: Any, operations: Sequence[JsonPatchOperation]) -> Any:
    """Apply checked operations to a copy of `document`; the input is never modified."""
    result = copy_json(document)
    for operation in operations:
        result = _applied(result, operation)
    return result


def apply_json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 on any JSON value: a new document, or a PatchError (400 malformed, 422 not applicable)."""
    try:
        return apply_parsed_json_patch(document, parse_json_patch(operations))
    except PatchError:
        raise
    except RecursionError as exc:
        raise MalformedPatch("The document is nested too deeply to patch") from exc
