"""The FHIR REST routes: create, update, patch, delete (queued per resource), read, vread, history, metadata.

Routes only adapt HTTP: check the envelope and the body (parse before any
I/O), build a JobRequest, and let the intake accept it.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.answers import accepted_answer, sync_answer
from api.capabilities import capability_statement
from api.dependencies import Connections
from api.entries import checked_resource
from api.http import check_id, fhir_response, http_date, parse_if_match, parse_prefer, parse_snapshot_mode, read_body
from api.intake import Finished, Submission
from worker.callbacks import callback_allowed
from worker.changes import fhir_instant
from worker.jobs import Action, JobRequest, body_digest
from worker.patch import parse_patch
from worker.patch.errors import InvalidRequest, ResourceGone, ResourceNotFound, UnsupportedPatchFormat
from worker.patch.fhir_json import dumps, loads
from worker.patch.fhir_xml import parse_xml, xml_to_resource
from worker.patch.structure import is_resource_type
from worker.results import etag, version_location
from worker.storage import StoredVersion

router = APIRouter(prefix="/fhir")
_HISTORY_METHODS = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}


def connections(request: Request) -> Connections:
    conn: Connections = request.app.state.connections
    return conn


def fhir_base(request: Request) -> str:
    configured = connections(request).settings.base_url
    return configured or f"{str(request.base_url).rstrip('/')}/fhir"


def _resource_type(name: str) -> str:
    if not is_resource_type(name):
        raise ResourceNotFound(f"Unknown resource type {name!r}", "type")
    return name


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    return fhir_response(await anyio.to_thread.run_sync(capability_statement, fhir_base(request)))


@router.patch("/{resource_type}/{resource_id}")
async def patch(resource_type: str, resource_id: str, request: Request) -> Response:
    job = JobRequest(Action.PATCH, _resource_type(resource_type), check_id(resource_id), await _body(request),
                     request.headers.get("content-type", ""), parse_if_match(request.headers.get("if-match")),
                     strict=request.query_params.get("_strict", "").lower() == "true")
    parse_patch(job.body, job.content_type, strict=job.strict)  # a malformed patch is refused before anything is queued
    return await _submit(request, job)


@router.patch("/{resource_type}")
async def conditional_patch(resource_type: str, request: Request) -> Response:
    """PATCH [base]/Type?identifier=system|value: the one matching resource (404 none, 412 several)."""
    query = request.url.query
    if not query:
        raise InvalidRequest("PATCH [base]/Type needs a condition: ?identifier=system|value", "request.url")
    resolver = connections(request).conditional
    resource_id = await anyio.to_thread.run_sync(resolver.resolve, _resource_type(resource_type), query)
    return await patch(resource_type, resource_id, request)


@router.put("/{resource_type}/{resource_id}")
async def update(resource_type: str, resource_id: str, request: Request) -> Response:
    resource = _resource_body(request, _resource_type(resource_type), await _body(request), check_id(resource_id))
    job = JobRequest(Action.UPDATE, resource_type, resource_id, dumps(resource).encode(), "application/fhir+json",
                     parse_if_match(request.headers.get("if-match")), parse_snapshot_mode(request.headers.get("x-meta-snapshot-mode")))
    return await _submit(request, job)


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request) -> Response:
    resource = _resource_body(request, _resource_type(resource_type), await _body(request), None)
    resource_id = str(uuid.uuid4())
    job = JobRequest(Action.CREATE, resource_type, resource_id, dumps({**resource, "id": resource_id}).encode(), "application/fhir+json")
    return await _submit(request, job)


@router.delete("/{resource_type}/{resource_id}")
async def delete(resource_type: str, resource_id: str, request: Request) -> Response:
    job = JobRequest(Action.DELETE, _resource_type(resource_type), check_id(resource_id),
                     if_match=parse_if_match(request.headers.get("if-match")))
    return await _submit(request, job)


@router.get("/{resource_type}/{resource_id}")
async def read(resource_type: str, resource_id: str, request: Request) -> Response:
    latest = await anyio.to_thread.run_sync(connections(request).newest, _resource_type(resource_type), check_id(resource_id))
    if latest is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} does not exist", "id")
    return _version_answer(latest, request)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
async def vread(resource_type: str, resource_id: str, version_id: str, request: Request) -> Response:
    if not version_id.isdigit():
        raise InvalidRequest(f"Version {version_id!r} is not a version number", "vid")
    store = connections(request).database.resources
    version = await anyio.to_thread.run_sync(store.version, _resource_type(resource_type), check_id(resource_id), int(version_id))
    if version is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} has no version {version_id}", "vid")
    return _version_answer(version, request)


@router.get("/{resource_type}/{resource_id}/_history")
async def history(resource_type: str, resource_id: str, request: Request) -> Response:
    count = request.query_params.get("_count", "100")
    if not count.isdigit() or not 0 < int(count) <= 1000:
        raise InvalidRequest("_count must be a whole number from 1 to 1000", "_count")
    store = connections(request).database.resources
    versions = await anyio.to_thread.run_sync(lambda: list(store.history(_resource_type(resource_type), check_id(resource_id), int(count))))
    if not versions:
        raise ResourceNotFound(f"{resource_type}/{resource_id} does not exist", "id")
    base = fhir_base(request)
    bundle = {"resourceType": "Bundle", "type": "history", "total": versions[0].version_id,
              "entry": [_history_entry(v, base) for v in versions]}
    return fhir_response(bundle)


def _history_entry(version: StoredVersion, base: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base}/{version.key}"}
    if not version.deleted:
        entry["resource"] = version.resource()
    method = _HISTORY_METHODS.get(version.action, "DELETE" if version.deleted else "PUT")
    entry["request"] = {"method": method, "url": version.key if method != "POST" else version.resource_type}
    entry["response"] = {"status": "201 Created" if version.version_id == 1 else "200 OK", "etag": etag(version.version_id),
                         "lastModified": fhir_instant(version.last_updated)}
    return entry


def _version_answer(version: StoredVersion, request: Request) -> Response:
    if version.deleted:
        raise ResourceGone(f"{version.key} was deleted (version {version.version_id})", "id")
    headers = {"ETag": etag(version.version_id), "Last-Modified": http_date(version.last_updated),
               "Content-Location": version_location(fhir_base(request), version.resource_type, version.resource_id, version.version_id)}
    return fhir_response(version.text, 200, headers)


async def _body(request: Request) -> bytes:
    return await read_body(request, connections(request).settings.max_body_bytes)


def _resource_body(request: Request, resource_type: str, body: bytes, resource_id: str | None) -> dict[str, Any]:
    """A whole resource for create/update: its media type, type and id checked, and valid FHIR R4."""
    kind = request.headers.get("content-type", "application/fhir+json").split(";")[0].strip().lower()
    if kind in ("application/fhir+json", "application/json"):
        resource = loads(body, what=f"{resource_type} resource")
    elif kind in ("application/fhir+xml", "application/xml"):
        resource = xml_to_resource(parse_xml(body, f"{resource_type} resource"))
    else:
        raise UnsupportedPatchFormat(f"Content-Type {kind!r} is not a FHIR resource format; use application/fhir+json", "Content-Type")
    return checked_resource(resource, resource_type, resource_id)


async def _submit(request: Request, job: JobRequest) -> Response:
    conn = connections(request)
    prefer = parse_prefer(request.headers.get("prefer"))
    callback = request.headers.get("x-callback-url")
    if callback is not None and not (conn.settings.callback_secret and callback_allowed(callback, conn.settings.callback_allow)):
        raise InvalidRequest(f"X-Callback-URL {callback!r} is not allowed: it must start with one of the configured prefixes "
                             f"({', '.join(conn.settings.callback_allow) or 'none configured'})", "X-Callback-URL")
    digest = body_digest(request.method, job.key, job.content_type, job.body, str(job.if_match), ",".join(job.snapshot_mode), callback or "")
    submission = Submission(job, digest, callback, request.headers.get("idempotency-key"))
    wait = None if "respond-async" in prefer else conn.settings.sync_wait_seconds
    answer = await conn.intake.submit(submission, wait)
    base = fhir_base(request)
    if isinstance(answer, Finished):
        return sync_answer(answer, base, prefer)
    return accepted_answer(answer, base)
