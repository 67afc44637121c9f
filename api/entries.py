"""Bundle entries and feed lines -> checked JobRequests (parse before any I/O).

One entry (a Bundle.entry or one NDJSON feed line) carries `request.method`,
`request.url`, optionally `request.ifMatch`, and a `resource`: for PATCH a
`Parameters` (FHIRPath Patch) or a `Binary` whose `contentType` is a JSON or
XML Patch and whose `data` is the base64 patch (as Smile CDR and HAPI take
them). Every error names the entry (`Bundle.entry[7]`, `line 12`).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from api.http import check_id, parse_if_match
from worker.errors import (
    FhirError,
    InvalidRequest,
    InvalidResource,
    Issue,
    MalformedPatch,
    ResourceNotFound,
    UnsupportedPatchFormat,
    operation_outcome,
)
from worker.model.access import CREATE, DELETE, READ, UPDATE, Principal
from worker.model.jobs import Action, JobRequest
from worker.patch import parse_patch
from worker.patch.fhir_json import dumps
from worker.patch.interaction import FHIR_JSON, JSON_PATCH, XML_PATCH
from worker.patch.structure import is_resource_type
from worker.patch.validation import lenient_issues, resource_issues

_URL = re.compile(r"^/?(?P<type>[A-Z][A-Za-z]+)(?:/(?P<id>[^/?]+))?$")
_BINARY_PATCH_TYPES = (JSON_PATCH, XML_PATCH)


def checked_resource(
    resource: Any, resource_type: str, resource_id: str | None, lenient: bool = False
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A whole resource for create/update: its type and id checked, and valid FHIR R4; with it, the warnings
    (an OperationOutcome) when `lenient` lets it be stored with what only the R4 model rules catch."""
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise InvalidRequest(f"The body must be a {resource_type} resource", "resourceType")
    if resource_id is not None and resource.get("id") != resource_id:
        raise InvalidRequest(
            f"The body's id {resource.get('id')!r} must equal the URL's id {resource_id!r}", f"{resource_type}.id"
        )
    errors, warnings = lenient_issues(resource) if lenient else (resource_issues(resource), [])
    if errors:
        raise InvalidResource.of(errors)
    return resource, operation_outcome(warnings) if warnings else None


def target(url: Any) -> tuple[str, str | None]:
    """`Type/id` or `Type` -> (type, id); 400/404 naming what is wrong."""
    found = _URL.fullmatch(url) if isinstance(url, str) else None
    if not found:
        raise InvalidRequest(f"request.url {url!r} must be Type/id (or Type for POST)", "request.url")
    if not is_resource_type(found["type"]):
        raise ResourceNotFound(f"Unknown resource type {found['type']!r}", "request.url")
    return found["type"], check_id(found["id"]) if found["id"] else None


def _patch_body(resource: Any) -> tuple[bytes, str]:
    if not isinstance(resource, dict):
        raise MalformedPatch("A PATCH entry needs a resource: Parameters, or Binary with the patch", "resource")
    if resource.get("resourceType") != "Binary":
        return dumps(resource).encode(), FHIR_JSON
    content_type = str(resource.get("contentType", "")).split(";")[0].strip().lower()
    if content_type not in _BINARY_PATCH_TYPES:
        raise UnsupportedPatchFormat(
            f"Binary.contentType {content_type!r} is not a patch format; use {' or '.join(_BINARY_PATCH_TYPES)}",
            "resource.contentType",
        )
    try:
        return base64.b64decode(str(resource.get("data", "")), validate=True), content_type
    except (binascii.Error, ValueError) as exc:
        raise MalformedPatch(f"Binary.data is not base64: {exc}", "resource.data") from exc


def _patch(type_: str, id_: str | None, entry: dict[str, Any], if_match: int | None, lenient: bool) -> JobRequest:
    if id_ is None:
        raise InvalidRequest("PATCH needs request.url Type/id", "request.url")
    body, content_type = _patch_body(entry.get("resource"))
    parse_patch(body, content_type)
    return JobRequest(Action.PATCH, type_, id_, body, content_type, if_match)


def _put(type_: str, id_: str | None, entry: dict[str, Any], if_match: int | None, lenient: bool) -> JobRequest:
    if id_ is None:
        raise InvalidRequest("PUT needs request.url Type/id", "request.url")
    resource, warnings = checked_resource(entry.get("resource"), type_, id_, lenient)
    return JobRequest(Action.UPDATE, type_, id_, dumps(resource).encode(), FHIR_JSON, if_match, warnings=warnings)


def _post(
    type_: str, id_: str | None, entry: dict[str, Any], if_match: int | None, lenient: bool, new_id: str = ""
) -> JobRequest:
    if id_ is not None:
        raise InvalidRequest("POST takes request.url Type (the server assigns the id)", "request.url")
    new_id = new_id or str(uuid.uuid4())
    resource, warnings = checked_resource(entry.get("resource"), type_, None, lenient)
    return JobRequest(
        Action.CREATE, type_, new_id, dumps({**resource, "id": new_id}).encode(), FHIR_JSON, warnings=warnings
    )


def _delete(type_: str, id_: str | None, entry: dict[str, Any], if_match: int | None, lenient: bool) -> JobRequest:
    if id_ is None:
        raise InvalidRequest("DELETE needs request.url Type/id", "request.url")
    return JobRequest(Action.DELETE, type_, id_, if_match=if_match)


_METHODS: Mapping[str, Callable[[str, str | None, dict[str, Any], int | None, bool], JobRequest]] = {
    "PATCH": _patch,
    "PUT": _put,
    "POST": _post,
    "DELETE": _delete,
}


_PERMISSIONS: Mapping[str, tuple[str, ...]] = {
    "PATCH": (UPDATE,),
    "PUT": (UPDATE, CREATE),
    "POST": (CREATE,),
    "DELETE": (DELETE,),
    "GET": (READ,),
}


def entry_type(request: dict[str, Any]) -> str:
    """The resource type an entry's request.url names (`Type`, `Type/id`, `Type?query`), unchecked."""
    return str(request.get("url", "")).lstrip("/").split("?")[0].split("/")[0]


def authorize_entry(entry: Any, caller: Principal, where: str) -> None:
    """403 naming the entry unless the caller may do what it asks; checked before it is resolved or parsed.
    An entry too malformed to tell is left to entry_request, which says what is wrong with it."""
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        return
    permissions = _PERMISSIONS.get(str(request.get("method", "")).upper())
    resource_type = entry_type(request)
    if permissions and is_resource_type(resource_type):
        caller.require(resource_type, *permissions, where=where)


def is_read(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("request"), dict)
        and str(entry["request"].get("method", "")).upper() == "GET"
    )


def entry_request(entry: Any, where: str, lenient: bool = False, created_id: str | None = None) -> JobRequest:
    """The checked job an entry asks for; a FhirError whose issues all name `where`. `created_id`: the id a POST
    entry gets (a transaction gives it first, for the references to the entry; otherwise a new one)."""
    try:
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise InvalidRequest("An entry must be an object with a request (method, url)", "request")
        request = entry["request"]
        method = str(request.get("method", "")).upper()
        if method not in _METHODS:
            raise InvalidRequest(
                f"request.method {request.get('method')!r} is not one of {', '.join(_METHODS)}", "request.method"
            )
        type_, id_ = target(request.get("url"))
        handler = partial(_post, new_id=created_id) if method == "POST" and created_id else _METHODS[method]
        return handler(type_, id_, entry, parse_if_match(request.get("ifMatch")), lenient)
    except FhirError as exc:
        raise located(exc, where) from exc


def located(error: FhirError, where: str) -> FhirError:
    """The same error (same status) with every issue naming the entry first."""
    return type(error).of(
        [Issue(i.code, f"{where}: {i.diagnostics}", (where, *i.expression), i.severity) for i in error.issues]
    )
